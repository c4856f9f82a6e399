"""The fork server the local executor's workers start from, and its early start.

Workers fork from a small server that has distill imported once (`fork_server_context`), so they never inherit what
the driver holds; they do inherit the server's limits, so it raises the open files limit before it starts. The
server takes ~0.7 s to import distill, and the driver itself ~0.9 s to import, compose its config and start it:
started only then, it delayed a large run's first map task by ~0.2 s more than the cut of the input. `start_early`
starts it before the driver imports anything, when the command line itself shows a run that will need it. Only the
standard library here: the point is to run before the rest of distill is imported.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import resource
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PRELOADED = ["distill.runner"]
DEFAULT_SHARD_MB = 64
"""`executor.shard_mb`'s default (conf/executor/local.yaml): an input of one shard or less is mapped in the driver."""
_NOT_A_PLAIN_RUN = {
    "-h", "--help", "-hh", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion", "-m",
    "--multirun", "--version", "--experimental-rerun",
}
MAX_OPEN_FILES = 1 << 20


def raise_open_files_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit (at most 2**20), before any worker starts,
    so the workers inherit it; returns the limit now in force. Linux's usual soft limit, 1,024, is below what a
    large plan holds open (`distill.plan.prepare.open_files_needed`), while the hard limit is commonly 512 Ki or
    more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft == resource.RLIM_INFINITY or soft >= ceiling:
        return soft if soft != resource.RLIM_INFINITY else MAX_OPEN_FILES
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    except (ValueError, OSError):  # a limit the system refuses after all: keep the one in force
        return soft
    return ceiling


def default_workers() -> int:
    """`executor.workers` when the config leaves it null: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_early: tuple[dict[str, str], str, list[str]] | None = None
"""What the process looked like when `start_early` started the server: its environment, working directory and
import path, which the server and its workers keep."""


def _process_state() -> tuple[dict[str, str], str, list[str]]:
    return dict(os.environ), os.getcwd(), list(sys.path)


def fork_server_context() -> Any:
    """Worker processes fork from a server that has distill imported (preloaded once, not per worker); started
    here unless it runs already. A server `start_early` started is started again when the process has changed since
    in what workers inherit: Hydra sets `hydra.job.env_set` (and, with `hydra.job.chdir`, the working directory)
    only around the run itself, after the early start.

    Ctrl-C reaches the whole process group, and the driver alone decides what it stops. The server starts with
    SIGINT ignored (an ignored signal stays ignored across exec; the server passes that on to the workers it forks),
    so neither it, while it imports distill, nor a worker, before its initializer runs, prints a KeyboardInterrupt
    traceback. Meanwhile the driver holds SIGINT blocked: a Ctrl-C then waits (Linux never discards a blocked
    signal) and reaches the driver's own handler when this ends. The mask is the main thread's only, while SIG_IGN
    is the whole process's: a Ctrl-C in that window could be lost. So a server that runs already (every pool after
    the first) is taken as it is, without the window: with the server started early, a whole-group Ctrl-C just
    after the plan was lost in 6 of 30 runs on a loaded machine (exit 0, the Ctrl-C test), and in none of 60 so."""
    global _early
    # The server and the workers it forks keep the limit in force when it starts, however early that is.
    raise_open_files_limit()
    if _early is not None and _early != _process_state():
        stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)  # type: ignore[attr-defined]
        if stop is not None:
            stop()
    _early = None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    if _server_alive():
        return context
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        multiprocessing.forkserver.ensure_running()
        return context
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return context


def _server_alive() -> bool:
    """Whether this process's fork server runs, so that `ensure_running` would do nothing. Asked without reaping a
    server that ended (`WNOWAIT`): `ensure_running` then reaps it and starts another."""
    pid = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)  # type: ignore[attr-defined]
    if pid is None:
        return False
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


def needs_workers_early(argv: Sequence[str], cores: int) -> bool:
    """Whether the command line alone shows a single local run of more than one worker over an input larger than
    one shard (what `LocalExecutor.warm_up` starts the server for): `source.path=` names a file, or a folder of
    files, over `executor.shard_mb`. Anything it cannot tell from the arguments (an input named by an experiment, a
    glob, a sweep) says no, and the server starts at `warm_up` as before."""
    overrides: dict[str, str] = {}
    for arg in argv:
        if arg in _NOT_A_PLAIN_RUN or arg.split("=", 1)[0] in _NOT_A_PLAIN_RUN:
            return False
        key, equals, value = arg.lstrip("+").partition("=")
        if equals:
            overrides[key] = value
    if overrides.get("executor", "local") != "local" or overrides.get("executor.kind", "local") != "local":
        return False
    workers = overrides.get("executor.workers", "null")
    try:
        if (cores if workers in ("null", "~", "") else int(workers)) <= 1:
            return False
        shard_bytes = float(overrides.get("executor.shard_mb", DEFAULT_SHARD_MB)) * 2**20
    except ValueError:
        return False  # the config says what is wrong with it
    path = overrides.get("source.path")
    return path is not None and input_bytes(Path(path)) > shard_bytes


def input_bytes(path: Path) -> int:
    """The bytes of a file, or of the files right inside a folder; 0 when there is nothing there to read."""
    try:
        if path.is_dir():
            return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def start_early(argv: Sequence[str]) -> None:
    """Starts the workers' fork server now when the command line shows a run that will need it (see
    `needs_workers_early`), so that it imports distill beside the driver's own imports and composition. Only a
    head start: a server that fails to start here (no process left under a pids limit, no temporary directory) is
    left to the executor, which says why in one line."""
    global _early
    if _early is not None:  # started already (`python -m distill` calls this before the CLI does)
        return
    try:
        if needs_workers_early(argv, default_workers()):
            state = _process_state()
            fork_server_context()
            _early = state
    except Exception:  # noqa: BLE001 - see above
        return

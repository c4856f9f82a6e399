"""Test-only: kill the run at a fixed point, so tests can interrupt it there and resume it."""

from __future__ import annotations

import os
import signal

KILL_HOOK = "DISTILL_TEST_KILL_AFTER"
"""`map:N` or `reduce:N` SIGKILLs the run's process group once N tasks of that phase have finished, `merge:N` at a
process's Nth merge checkpoint (`distill.output.merged_jsonl`); `map-worker` or `reduce-worker` has a pool worker
SIGKILL itself as it starts a task of that phase, as the out-of-memory killer would; `setup-worker` fails every pool
worker's setup."""


def kill_hook(phase: str, finished: int) -> None:
    if os.environ.get(KILL_HOOK) == f"{phase}:{finished}":
        os.killpg(os.getpgid(0), signal.SIGKILL)


def hooked_phase() -> str | None:
    """The phase a test kills the run in (`map`, `reduce`, `merge`), if one does."""
    hook = os.environ.get(KILL_HOOK, "")
    return hook.split(":", 1)[0] if ":" in hook else None

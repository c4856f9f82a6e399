"""The ray executor: the same plan on Ray (`executor=ray`, `pip install 'distill[ray]'`), on a local Ray it starts
for the run or on a cluster it joins, with the same files, byte for byte, as `executor=local`.

- map: one Ray task per input shard running distill's own `map_shard`, so readers, field maps, origins and
  quarantine rows are those of a local run; each record goes to its group's partition by distill's own hash (the
  partition shuffle happens as the map writes its spills).
- decide: distributed over Ray tasks, never by collecting every key on the driver (`distill.executor.ray_decide`).
- reduce: one Ray task per partition running `reduce_partition` with distill's writers, under distill's names;
  the driver's merge is the local one.

Spills and outputs live on the run directory's filesystem: a local Ray shares it, a cluster needs it mounted at the
same path on every node. Every task is idempotent: it returns the completion marker a finished attempt left, so a
task retried after its worker died (`executor.max_retries`) never runs twice over half-deleted inputs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayTaskError

from distill.errors import DistillError
from distill.executor.progress import Progress, log_phase
from distill.output.writers import DatasetWriter
from distill.plan.context import PlanContext
from distill.plan.decide import Decisions
from distill.plan.map import MapResult, map_shard
from distill.plan.prepare import ExecutorSettings
from distill.plan.reduce import ReduceResult, reduce_partition
from distill.plan.spill import read_marker
from distill.sources.base import Shard

log = logging.getLogger(__name__)

FAULT_ENV = "DISTILL_TEST_RAY_FAULT"
"""Test-only: `PHASE:ACTION:DIR` makes the first task of PHASE (map | reduce) fail once: ACTION `raise` raises
`InjectedFault`; `hang` writes the worker's PID to DIR/pid and sleeps until killed (a map task halfway through its
shard, its spills open). DIR/PHASE.fired marks the fault spent, so the retry runs clean."""
CONNECT_TIMEOUT_SECONDS = 10
RESOURCE_KEYS = ("CPU", "GPU", "memory", "object_store_memory")


class InjectedFault(RuntimeError):
    """Raised once by the test-only fault hook; retried like a transient error."""


_WORKER: dict[str, Any] = {}
"""This worker process's view of the current run: its PlanContext, fetched and set up once per worker."""


def worker_context(token: str, holder: list[Any]) -> PlanContext:
    """The run's context in this worker: fetched from the object store (with every step's loaded state, e.g. the
    eval-set index, which the driver loaded once) on the worker's first task of the run, reused after."""
    if _WORKER.get("token") != token:
        ctx = ray.get(holder[0])
        ctx.setup()
        _WORKER.clear()
        _WORKER.update(token=token, ctx=ctx)
    return _WORKER["ctx"]


def claim_fault(fault: str | None, phase: str) -> Path | None:
    """When this attempt is the one the test-only fault spec picks: raises (`raise`) or returns its folder
    (`hang`); else None."""
    if not fault:
        return None
    wanted, action, folder = fault.split(":", 2)
    if wanted != phase:
        return None
    try:
        os.close(os.open(Path(folder) / f"{phase}.fired", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    if action == "raise":
        raise InjectedFault(f"injected fault in the {phase} phase")
    return Path(folder)


def hang_until_killed(folder: Path) -> None:
    (folder / ".pid").write_text(str(os.getpid()))
    os.replace(folder / ".pid", folder / "pid")
    time.sleep(600)


@dataclass
class HangingSource:
    """The run's source, except that it stops halfway through a shard until the test kills the worker: the map
    task dies with its spills open under temporary names."""

    source: Any
    folder: Path

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def read_shard(self, shard: Shard) -> Iterator[Any]:
        rows = list(self.source.read_shard(shard))
        yield from rows[: len(rows) // 2]
        hang_until_killed(self.folder)
        yield from rows[len(rows) // 2 :]


@ray.remote
def map_task(token: str, holder: list[Any], shard: Shard, fault: str | None) -> MapResult:
    ctx = worker_context(token, holder)
    done = read_marker(ctx.layout.map_done(shard.index))
    if done is not None:
        return done
    claimed = claim_fault(fault, "map")
    if claimed is not None:
        source = HangingSource(ctx.settings.source, claimed)
        ctx = replace(ctx, settings=replace(ctx.settings, source=source))
    return map_shard(ctx, shard)


@ray.remote
def reduce_task(
    token: str, holder: list[Any], partition: int, shards: list[int], writer: DatasetWriter, fault: str | None
) -> ReduceResult:
    ctx = worker_context(token, holder)
    done = read_marker(ctx.layout.reduce_done(partition))
    if done is not None:
        return done
    claimed = claim_fault(fault, "reduce")
    if claimed is not None:
        hang_until_killed(claimed)
    return reduce_partition(ctx, partition, shards, writer)


def check_reachable(address: str) -> None:
    """Fails in seconds, in one line, when nothing listens at a `HOST:PORT` or `ray://HOST:PORT` address (Ray itself
    retries for a minute or more before it gives up)."""
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as error:
        raise DistillError(f"executor.address: cannot reach a Ray cluster at {address!r}: {error.strerror or error}") from None


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RayExecutor:
    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.owned = False
        self.token = ""
        self.holder: list[Any] | None = None
        self.description: dict[str, Any] = {"kind": "ray"}
        self.task_options = {"max_retries": settings.max_retries, "retry_exceptions": [OSError, InjectedFault]}
        self.pending: list[Any] = []
        self.shared: PlanContext | None = None

    # -- Ray's lifetime ------------------------------------------------------------------------------------------

    def __enter__(self) -> RayExecutor:
        address = self.settings.address or os.environ.get("RAY_ADDRESS") or None
        if ray.is_initialized():
            log.info("ray executor: using the Ray this process already joined")
        elif address is None:
            ray.init(num_cpus=self.settings.workers, include_dashboard=False, address="local", namespace="distill")
            self.owned = True
        else:
            check_reachable(address)
            try:
                ray.init(address=address, namespace="distill")
            except (ConnectionError, TimeoutError, ValueError, RuntimeError) as error:
                raise DistillError(f"executor.address: cannot reach a Ray cluster at {address!r}: {first_line(error)}") from None
            self.owned = True
        resources = ray.cluster_resources()
        self.description = {
            "kind": "ray",
            "address": address or "local",
            "ray_version": ray.__version__,
            "nodes": sum(1 for node in ray.nodes() if node.get("Alive")),
            "resources": {key: resources[key] for key in RESOURCE_KEYS if key in resources},
        }
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if kind is not None:
            for ref in self.pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while already failing
                    pass
        self.pending = []
        self.holder = self.shared = None
        if self.owned:
            ray.shutdown()
            self.owned = False

    def describe(self) -> dict[str, Any]:
        return dict(self.description)

    # -- the plan's phases ---------------------------------------------------------------------------------------

    def share(self, ctx: PlanContext) -> tuple[str, list[Any]]:
        """The run's context in the object store, once per run; tasks get it inside a list, so Ray hands them the
        reference and each worker fetches (and sets up) the context once."""
        if self.holder is None or self.shared is not ctx:
            self.token = uuid.uuid4().hex
            self.holder = [ray.put(ctx)]
            self.shared = ctx
        return self.token, self.holder

    def as_completed(self, refs: list[Any]) -> Iterator[Any]:
        """Each task's result as it finishes; a task's DistillError is raised as itself (one line for the user)."""
        self.pending = list(refs)
        while self.pending:
            done, self.pending = ray.wait(self.pending, num_returns=1)
            yield get(done[0])

    def run_map(self, ctx: PlanContext, shards: Sequence[Shard], progress: Progress) -> list[MapResult]:
        token, holder = self.share(ctx)
        fault = os.environ.get(FAULT_ENV)
        sizes = {shard.index: shard.size for shard in shards}
        task = map_task.options(**self.task_options)
        results = []
        started = time.perf_counter()
        for result in self.as_completed([task.remote(token, holder, shard, fault) for shard in shards]):
            progress.advance(sizes[result.shard], result.rows)
            results.append(result)
        log_phase("ray", "map", started, sum(r.seconds for r in results), sum(r.rows for r in results))
        return results

    def run_decide(self, ctx: PlanContext, shards: Sequence[int]) -> Decisions:
        from distill.executor.ray_decide import decide_distributed

        token, holder = self.share(ctx)
        started = time.perf_counter()
        decisions = decide_distributed(ctx, list(shards), token, holder, self.task_options)
        log_phase("ray", "decide", started)
        return decisions

    def run_reduce(
        self, ctx: PlanContext, partitions: Sequence[int], shards: Sequence[int], writer: DatasetWriter,
        progress: Progress,
    ) -> list[ReduceResult]:
        token, holder = self.share(ctx)
        fault = os.environ.get(FAULT_ENV)
        writer_ref = ray.put(writer)
        task = reduce_task.options(**self.task_options)
        refs = [task.remote(token, holder, partition, list(shards), writer_ref, fault) for partition in partitions]
        results = []
        started = time.perf_counter()
        for result in self.as_completed(refs):
            progress.advance(1, result.records)
            results.append(result)
        log_phase("ray", "reduce", started, sum(r.seconds for r in results), sum(r.records for r in results))
        return results


def get(refs: Any) -> Any:
    """`ray.get`, with a task's DistillError raised as itself rather than wrapped in Ray's traceback text."""
    try:
        return ray.get(refs)
    except RayTaskError as error:
        if isinstance(error.cause, DistillError):
            raise error.cause from None
        raise

"""The ray executor: the same plan on Ray (`executor=ray`, `pip install 'distill[ray]'`), on a local Ray it starts
for the run or on a cluster it joins, with the same files, byte for byte, as `executor=local`.

- map: a Ray Data pipeline (`distill.executor.ray_data`): one read task per input shard running the source's own
  reader, so field maps, origins and quarantine rows are those of a local run, then `map_batches` running the chain
  over each batch. The records, each with its partition by distill's own hash of its group key, stay in the object
  store (materialized); the keys and ids go to the spills decide reads, as after a local map.
- decide: distributed over Ray tasks, never by collecting every key on the driver (`distill.executor.ray_decide`).
- reduce: the records go through a Ray Data shuffle on distill's partition number (`groupby("partition")`) and each
  partition, its entries in read order, runs `reduce_partition` with distill's writers, under distill's names; the
  driver's merge is the local one.

The driver holds the materialized map's block references, one small result per shard and per partition, and a count
per partition. Spills and outputs live on the run directory's filesystem: a local Ray shares it, a cluster needs it
mounted at the same path on every node. Ray retries a task whose worker died, or that raised a transient error
(`executor.max_retries`); every task is idempotent (its spills are renamed into place whole, a reduced partition
leaves a completion marker that a retry returns). The map leaves no completion markers: its records live in this
run's object store, so a resumed run maps every shard again (shards a local run mapped are read from its spills).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import ray.data
from ray.exceptions import RayTaskError

from distill.errors import DistillError
from distill.executor.progress import Progress, log_phase
from distill.output.writers import DatasetWriter
from distill.plan.context import PlanContext
from distill.plan.decide import Decisions
from distill.plan.map import MapResult
from distill.plan.prepare import ExecutorSettings
from distill.plan.reduce import ReduceResult
from distill.sources.base import Shard

log = logging.getLogger(__name__)

FAULT_ENV = "DISTILL_TEST_RAY_FAULT"
"""Test-only: `PHASE:ACTION:DIR` makes the first task of PHASE (map | reduce) fail once: ACTION `raise` raises
`InjectedFault`; `hang` writes the worker's PID to DIR/pid and sleeps until killed (a map task with its first batch
mapped and that batch's spills open; a reduce task before it reduces). DIR/PHASE.fired marks the fault spent, so the
retry runs clean."""
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


def worker_value(token: str, name: str, holder: list[Any]) -> Any:
    """A value the driver put in the object store for the run (e.g. the dataset writer), fetched once per worker;
    call after `worker_context`, which forgets an earlier run's values."""
    if _WORKER.get("token") != token:
        raise RuntimeError("worker_value before worker_context")
    if name not in _WORKER:
        _WORKER[name] = ray.get(holder[0])
    return _WORKER[name]


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


DATA_CONTEXT = {
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    "shuffle_strategy": "sort_shuffle_pull_based",
    "execution_no_progress_timeout_s": -1,
}
"""Ray Data settings for the run's pipelines: no progress bars or start-up lines (distill's Progress lines say the
same on stderr); the sort-based shuffle, whose tasks run on the workers the map already started, where the hash
shuffle starts workers of its own (seconds of fixed cost per run on a small cluster); and no time limit on a phase
without output (one shard's map or one partition's reduce may take longer than Ray Data's 30 minutes)."""


class RayExecutor:
    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.owned = False
        self.token = ""
        self.holder: list[Any] | None = None
        self.description: dict[str, Any] = {"kind": "ray"}
        self.shared: PlanContext | None = None
        self.mapped: Any = None
        """The map's rows, materialized in the object store until the reduce has shuffled them."""
        self.mapped_shards: set[int] = set()
        self.expected: Counter[int] = Counter()
        self.restore: list[Any] = []

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
        self.restore = configure_ray_data()
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
        self.holder = self.shared = self.mapped = None
        for undo in reversed(self.restore):
            undo()
        self.restore = []
        if self.owned:
            ray.shutdown()
            self.owned = False

    def describe(self) -> dict[str, Any]:
        return dict(self.description)

    def warm_up(self, input_bytes: int) -> None:
        """Nothing to start early: Ray started (or was joined) on entry."""

    # -- the plan's phases ---------------------------------------------------------------------------------------

    def share(self, ctx: PlanContext) -> tuple[str, list[Any]]:
        """The run's context in the object store, once per run; tasks get it inside a list, so Ray hands them the
        reference and each worker fetches (and sets up) the context once."""
        if self.holder is None or self.shared is not ctx:
            self.token = uuid.uuid4().hex
            self.holder = [ray.put(ctx)]
            self.shared = ctx
        return self.token, self.holder

    def remote_args(self) -> dict[str, Any]:
        """How every task of the run is retried, Ray Data's included (a fresh list each time: Ray Data appends to
        it)."""
        return {"max_retries": self.settings.max_retries, "retry_exceptions": [OSError, InjectedFault]}

    def run_map(self, ctx: PlanContext, shards: Sequence[Shard], progress: Progress) -> list[MapResult]:
        from distill.executor import ray_data as pipeline

        if not shards:
            return []
        token, holder = self.share(ctx)
        fault = os.environ.get(FAULT_ENV)
        sizes = {shard.index: shard.size for shard in shards}
        started = time.perf_counter()
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing task options this way; it is still the only way to bound a task's retries.
            warnings.simplefilter("ignore", DeprecationWarning)
            source = pipeline.ShardsDatasource(token, holder, shards)
            # One block per read task: Ray Data would otherwise split each task's output, which keeps it from
            # fusing the read with the chain (the batches would cross the object store in between).
            mapped = ray.data.read_datasource(
                source, override_num_blocks=len(shards), ray_remote_args=self.remote_args()
            ).map_batches(
                pipeline.map_batches, batch_size=None, batch_format="pyarrow",
                fn_kwargs={"token": token, "holder": holder, "fault": fault}, **self.remote_args(),
                # The read's own default: with the same task options, Ray Data runs the chain in the read's task.
                scheduling_strategy=ray.data.DataContext.get_current().scheduling_strategy,
            )
            self.mapped = mapped.materialize()
            joined = self.mapped.map_batches(pipeline.not_records, batch_format="pyarrow").groupby("shard").map_groups(
                pipeline.join_shard, batch_format="pyarrow", fn_kwargs={"token": token, "holder": holder},
                **self.remote_args(),
            )
            results = []
            for batch in joined.iter_batches(batch_size=None, batch_format="pyarrow"):
                for result, parts in pipeline.results(batch):
                    progress.advance(sizes[result.shard], result.rows)
                    results.append(result)
                    self.expected.update(parts)
        self.mapped_shards.update(result.shard for result in results)
        self.description["map"] = {"engine": "ray.data", "read_tasks": len(shards)}
        log_phase("ray", "map", started, sum(r.seconds for r in results), sum(r.rows for r in results))
        return results

    def run_decide(self, ctx: PlanContext, shards: Sequence[int], records: int) -> Decisions:
        from distill.executor.ray_decide import decide_distributed

        token, holder = self.share(ctx)
        started = time.perf_counter()
        decisions = decide_distributed(ctx, list(shards), token, holder, self.remote_args())
        log_phase("ray", "decide", started)
        return decisions

    def run_reduce(
        self, ctx: PlanContext, partitions: Sequence[int], shards: Sequence[int], writer: DatasetWriter,
        progress: Progress,
    ) -> list[ReduceResult]:
        from distill.executor import ray_data as pipeline

        if not partitions:
            return []
        token, holder = self.share(ctx)
        job = pipeline.ReduceJob(
            token, holder, [ray.put(writer)], set(partitions), dict(self.expected),
            earlier=[shard for shard in shards if shard not in self.mapped_shards], fault=os.environ.get(FAULT_ENV),
        )
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            rows = ray.data.from_arrow(pipeline.marks(partitions))
            if self.mapped is not None:
                rows = self.mapped.union(rows)
            reduced = rows.groupby("partition", num_partitions=len(partitions)).map_groups(
                pipeline.reduce_group, batch_format="pyarrow", fn_kwargs={"job": job}, **self.remote_args(),
            )
            results = []
            for batch in reduced.iter_batches(batch_size=None, batch_format="pyarrow"):
                for result in pipeline.results(batch):
                    progress.advance(1, result.records)
                    results.append(result)
        self.mapped = None
        self.description["reduce"] = {"engine": "ray.data", "shuffle": "groupby(partition)"}
        log_phase("ray", "reduce", started, sum(r.seconds for r in results), sum(r.records for r in results))
        return results


def configure_ray_data() -> list[Any]:
    """Sets DATA_CONTEXT and Ray Data's console log to errors only (its log file keeps everything); returns what
    undoes it, so a process that runs several jobs gets its settings back."""
    with warnings.catch_warnings():
        # Ray 2.60 warns about its own deprecated settings while it builds the default context.
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
    undo = []
    for name, value in DATA_CONTEXT.items():
        if hasattr(context, name):
            undo.append(lambda name=name, old=getattr(context, name): setattr(context, name, old))
            setattr(context, name, value)
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            undo.append(lambda handler=handler, old=handler.level: handler.setLevel(old))
            handler.setLevel(logging.ERROR)
    return undo


def get(refs: Any) -> Any:
    """`ray.get`, with a task's DistillError raised as itself rather than wrapped in Ray's traceback text."""
    try:
        return ray.get(refs)
    except RayTaskError as error:
        if isinstance(error.cause, DistillError):
            raise error.cause from None
        raise

"""The local executor: the plan's map, decide and reduce tasks on a pool of worker processes on this machine, or in
this process with one worker. Workers start from a small fork server, not from the driver, so they never inherit
what the driver holds; each builds the run's parts from the resolved config once and runs every step's `setup()`
once. One pool serves the three phases, so a worker's later tasks reuse the heap its earlier ones grew: on the VM
the bench runs on, a page touched anew costs ~10 µs, and a fresh worker's first reduce partition faulted ~50,000 of
them (bench/RESULTS.md)."""

from __future__ import annotations

import gc
import logging
import multiprocessing.forkserver
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from typing import Any

from distill.collector import cyclic_gc_paused, heap_trimmer, keep_freed_memory, set_aside
from distill.errors import DistillError
from distill.executor.progress import Progress, log_phase, peak_rss_mib, restart_peak_rss
from distill.fork_server import fork_server_context
from distill.kill_hooks import KILL_HOOK, kill_hook
from distill.output.writers import DatasetWriter, dataset_writer
from distill.plan.context import Layout, PlanContext
from distill.plan.decide import Decisions, decide, log_held
from distill.plan.map import MapResult, map_shard
from distill.plan.prepare import partition_budget
from distill.plan.reduce import ReduceResult, reduce_partition
from distill.plan.spill import read_marker, write_marker
from distill.sources.base import Shard

log = logging.getLogger(__name__)

_WORKER: dict[str, Any] = {}
"""A process's view of the run: set in the driver for in-process tasks, and by `_start_worker` in each worker."""


def _start_worker(config: dict[str, Any], layout: Layout, partitions: int, compress: bool, shards: int) -> None:
    _WORKER.update(pooled=True)
    try:
        if os.environ.get(KILL_HOOK) == "setup-worker":
            raise DistillError("a worker's setup failed (the test hook)")
        from distill.config import build_settings

        settings = build_settings(config)
        ctx = PlanContext(settings, layout, partitions, compress, config, shards)
        ctx.setup()
        writer = dataset_writer(
            settings.task, layout.root.parent, layout, settings.output_format, compress, settings.flavour_output
        )
        _WORKER.update(ctx=ctx, writer=writer)
        gc.freeze()  # what the worker set up lives as long as it does (`set_aside`), out of each task's collection
    except Exception as error:  # noqa: BLE001 - raised again by each of the worker's tasks (`_worker_ready`)
        # concurrent.futures only logs an initializer's error, with its traceback, and calls the pool broken (which
        # reads as a killed worker): the worker's tasks raise it instead, and the driver reports it as itself.
        _WORKER["setup_failed"] = error


def _worker_ready(phase: str) -> None:
    failed = _WORKER.get("setup_failed")
    if failed is not None:
        raise failed
    if _WORKER.get("pooled") and _WORKER.get("phase") != phase:
        _WORKER["phase"] = phase  # the worker's first task of this phase: its peak RSS is the phase's from here
        restart_peak_rss()


def _decide_task(shard_ids: list[int]) -> tuple[Decisions, dict[str, dict[str, Any]]]:
    _worker_ready("decide")
    ctx = _WORKER["ctx"]
    # On a pool worker the run's other workers wait for the reduce: a decide in buckets shares them with a process
    # beside it. (In the driver, a run of one worker or a small one, it decides alone.)
    beside = _bucket_helper if _WORKER.get("pooled") and ctx.settings.executor.workers > 1 else None
    with cyclic_gc_paused():
        decisions = decide(ctx, shard_ids, beside)
    decisions.peak_rss_mib = peak_rss_mib()
    if _WORKER.get("pooled") and decisions.peak_rss_mib * 2**20 > partition_budget(ctx.settings.executor):
        # The worker reduces partitions next, and keeps the heap the decide grew for them (at 1e6 bench records its
        # first partition faulted ~750 pages instead of ~50,000), but never more than a partition may use: a decide
        # in buckets (1e7 records: ~950 MiB) gives back what it held, as a process of its own did when it ended.
        trim = heap_trimmer()
        if trim is not None:
            trim(0)
    return decisions, {step.name: step.figures for step in ctx.settings.steps}


@contextmanager
def _bucket_helper() -> Iterator[Callable[..., Future[Any]]]:
    """The process beside a decide in buckets (`distill.plan.decide.decide_in_buckets`): a pool of one worker set up
    as the run's are, started from a fork server of this worker's own (stopped with it, so it holds no memory
    through the reduce). Gives `submit(function, *args)`, which queues `function(ctx, *args)` on it (a scatter's
    half, a bucket). A helper killed (out of memory) fails the decide's task, which the driver reports as a
    worker killed."""
    ctx = _WORKER["ctx"]
    try:
        with process_pool(1, _start_worker, (ctx.config, ctx.layout, ctx.partitions, ctx.compress, ctx.shards)) as pool:
            pool.submit(_worker_ready, "decide")  # its process starts now, not with the first bucket
            yield lambda function, *args: pool.submit(_beside_task, function, *args)
    finally:
        stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)  # type: ignore[attr-defined]
        if stop is not None:
            stop()


def _beside_task(function: Callable[..., Any], *args: Any) -> Any:
    """One piece of a decide in buckets, in the process beside it: `function(ctx, *args)`."""
    _worker_ready("decide")
    with cyclic_gc_paused():
        return function(_WORKER["ctx"], *args)


def _map_task(shard: Shard) -> tuple[MapResult, float]:
    _worker_ready("map")
    worker_kill_hook("map")
    with cyclic_gc_paused(collect_after=True, give_back=False):  # as `_reduce_task`: the next shard reuses it
        return map_shard(_WORKER["ctx"], shard), peak_rss_mib()


def _reduce_task(partition: int, shards: list[int]) -> tuple[ReduceResult, float]:
    _worker_ready("reduce")
    worker_kill_hook("reduce")
    # The heap a partition freed is kept for the next one (`give_back=False`): given back after each partition, it
    # was faulted in again page by page by the next, ~5% of the reduce (bench/RESULTS.md). A reduce worker holds at
    # most its largest partition's peak, which the partition count keeps within its share of the budget, and the
    # pool, with its workers, ends with the phase.
    with cyclic_gc_paused(collect_after=True, give_back=False):
        return reduce_partition(_WORKER["ctx"], partition, shards, _WORKER["writer"]), peak_rss_mib()


SMALL_RUN_RECORDS = 100_000
"""Below this many records the decide phase and the quarantine's merge run in the driver: a process for them costs
~0.6 s to start when none runs yet (the fork server imports distill; a bundled-sample run took 2.1 s with it, 1.5 s
without) and gives back nothing worth it (the decide holds ~110 bytes per record: 11 MB here)."""


def worth_a_process(records: int) -> bool:
    """Whether a phase over this many records runs off the driver: the decide on the pool, the quarantine's merge in
    a process of its own (see SMALL_RUN_RECORDS)."""
    return records >= SMALL_RUN_RECORDS


def worker_kill_hook(phase: str) -> None:
    if _WORKER.get("pooled") and os.environ.get(KILL_HOOK) == f"{phase}-worker":
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are delivered, to their usual handlers, when it ends."""
    pending: list[int] = []
    deferred = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, frame: pending.append(signum)) for signum in deferred}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


class WorkerDied(DistillError):
    """A worker process ended without finishing its task (killed: by the out-of-memory killer, by hand)."""


WORKER_DIED = (
    "a worker process was killed before it finished its task (out of memory? see executor.memory_gb); "
    "run again with resume=true and the same hydra.run.dir to keep the finished work"
)


@contextmanager
def process_pool(
    processes: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[Any]:
    """A pool of worker processes started from a small fork server (with distill preloaded), never from this
    process, so they do not inherit what it holds. A concurrent.futures pool, not a multiprocessing one: when a
    worker dies (SIGKILL, the out-of-memory killer), a multiprocessing pool starts another and waits forever for
    the lost task; this one fails the task, which `results` turns into `WorkerDied`. A block that ends shuts the
    pool down; one that fails (Ctrl-C included) stops its workers first."""
    pool = None
    try:
        pool = ProcessPoolExecutor(
            processes, mp_context=fork_server_context(), initializer=_pool_worker,
            initargs=(os.getpid(), initializer, initargs),
        )
        yield pool
        pool.shutdown(wait=True)
    except BaseException:
        if pool is not None:
            stop_pool(pool)
        raise


def _pool_worker(driver: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """What every pool worker runs first: Ctrl-C reaches the whole process group, and the driver alone decides (it
    stops the pool); the worker ends with the driver; then the pool's own initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with(driver)
    keep_freed_memory()
    if initializer is not None:
        initializer(*initargs)


def exit_with(driver: int) -> None:
    """This worker ends as soon as the driver does. A driver killed alone (the out-of-memory killer may pick it)
    would otherwise leave its workers and their fork server waiting for tasks forever: each worker holds both ends
    of the pool's task pipe, so none ever reads an end of file. A thread waits on the driver's pidfd, which no
    other process that reuses the pid can stand for."""
    try:
        watched = os.pidfd_open(driver)
    except ProcessLookupError:  # already gone
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd here (Linux before 5.3): nothing to wait on
        return

    def wait() -> None:
        select.select([watched], [], [])
        os._exit(1)

    threading.Thread(target=wait, name="distill-driver-watch", daemon=True).start()


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancels what has not started and terminates the workers (concurrent.futures has no public way to stop a
    running task before Python 3.14's `terminate_workers`)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join()


def result_of(future: Future[Any]) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        raise WorkerDied(WORKER_DIED) from None


def submitted(pool: ProcessPoolExecutor, task: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Future[Any]]:
    """`task(*call)` for each call, queued on the pool. The pool starts its workers as tasks arrive: Ctrl-C waits
    until they are started and known to the pool, which stops them (a worker that outlived its driver would print
    a traceback as it failed to start)."""
    with signals_deferred():
        try:
            return [pool.submit(task, *call) for call in calls]
        except BrokenProcessPool:  # a worker died before every task was queued
            raise WorkerDied(WORKER_DIED) from None


def results(pool: ProcessPoolExecutor, task: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
    """`task(*call)` for each call, on the pool, each result as soon as it is done."""
    for future in as_completed(submitted(pool, task, calls)):
        yield result_of(future)


@contextmanager
def beside(function: Callable[..., Any], args: tuple[Any, ...], *, process: bool) -> Iterator[Callable[[], Any]]:
    """Runs `function(*args)` in a process of its own while the block runs, and yields what waits for its result;
    without `process`, that call runs it, in this process. A block that fails stops the process."""
    if not process:
        yield lambda: function(*args)
        return
    with process_pool(1) as pool:
        (future,) = submitted(pool, function, [args])
        yield lambda: result_of(future)


def largest_first(ctx: PlanContext, partitions: Sequence[int], shards: Sequence[int]) -> list[int]:
    """The partitions in the order a pool should take them: the most bytes of part spills first, so the phase ends
    on small ones and no worker waits long for the last (partitions by hash differ by a few percent; with one
    partition a worker at the end, the wait is what the last one takes)."""

    def spilled(partition: int) -> int:
        total = 0
        for shard in shards:
            try:
                total += ctx.layout.part(partition, shard).stat().st_size
            except FileNotFoundError:
                pass
        return total

    return sorted(partitions, key=lambda partition: -spilled(partition))


class LocalExecutor:
    """Runs the plan's phases on one pool of `workers` processes, started by the first phase that needs it and ended
    with the reduce (its workers' memory goes back before the merge), or with the run when a phase fails."""

    def __init__(self, workers: int, shard_bytes: int = 0) -> None:
        self.workers = workers
        self.shard_bytes = shard_bytes
        self._pool_block = ExitStack()
        self._pool: ProcessPoolExecutor | None = None

    def warm_up(self, input_bytes: int) -> None:
        """Starts the workers' fork server now when the input will be mapped on a pool (more than one shard's worth):
        it imports distill (0.7 s) in a process of its own while the driver cuts the input, instead of delaying the
        map's first task."""
        if self.workers > 1 and input_bytes > self.shard_bytes:
            fork_server_context()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._pool = None
        self._pool_block.__exit__(*exc)  # a failed phase stops the workers (`process_pool`); a finished one waits

    def _pool_for(self, ctx: PlanContext) -> ProcessPoolExecutor:
        if self._pool is None:
            arguments = (ctx.config, ctx.layout, ctx.partitions, ctx.compress, ctx.shards)
            self._pool = self._pool_block.enter_context(process_pool(self.workers, _start_worker, arguments))
            log.info("local: %d worker processes, for every phase still to run", self.workers)
        return self._pool

    def _end_pool(self) -> None:
        self._pool = None
        self._pool_block.close()

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "workers": self.workers}

    def _run(
        self, ctx: PlanContext, task: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, processes: bool = False
    ) -> Iterator[Any]:
        """`task(*call)` for each call: in this process with one worker (or one call, unless `processes`), else on
        the pool."""
        if self.workers <= 1 or (len(calls) <= 1 and not processes) or ctx.config is None:
            with set_aside():
                yield from (task(*call) for call in calls)
            return
        yield from results(self._pool_for(ctx), task, calls)

    def run_map(self, ctx: PlanContext, shards: Sequence[Shard], progress: Progress) -> list[MapResult]:
        _WORKER.update(ctx=ctx)
        results = []
        sizes = {shard.index: shard.size for shard in shards}
        started = time.perf_counter()
        peak = 0.0
        for result, rss in self._run(ctx, _map_task, [(shard,) for shard in shards]):
            progress.advance(sizes[result.shard], result.rows)
            results.append(result)
            peak = max(peak, rss)
            kill_hook("map", len(results))
        log_phase("local", "map", started, sum(r.seconds for r in results), sum(r.rows for r in results))
        log.info("map: peak RSS of a worker %.0f MiB", peak)
        return results

    def run_decide(self, ctx: PlanContext, shards: Sequence[int], records: int) -> Decisions:
        """The decide phase on one of the pool's workers (with more than one worker, for `SMALL_RUN_RECORDS` records
        or more), not in the driver, which would hold what it grew (every global step's keys) through the reduce and
        the merge: the worker reuses it for its reduce partitions (`_decide_task`)."""
        _WORKER.update(ctx=ctx)
        started = time.perf_counter()
        finished = read_marker(ctx.layout.decide_done)
        if finished is not None:
            # Resumed after the decide had finished: its decisions wait on disk for the partitions still to reduce.
            decisions, figures = finished
            log.info("decide: finished before the interruption, not run again")
        else:
            apart = worth_a_process(records)
            ((decisions, figures),) = list(self._run(ctx, _decide_task, [(list(shards),)], processes=apart))
            write_marker(ctx.layout.decide_done, (decisions, figures))
        for step in ctx.settings.steps:
            step.figures = figures.get(step.name, {})
        log_held(decisions)
        for name, count in decisions.beside.items():
            log.info("decide %s: %d of %d buckets in a process beside the decide's", name, count, decisions.buckets)
        log_phase("local", "decide", started)
        if decisions.peak_rss_mib:
            log.info("decide: peak RSS of its process %.0f MiB", decisions.peak_rss_mib)
        return decisions

    def run_reduce(
        self, ctx: PlanContext, partitions: Sequence[int], shards: Sequence[int], writer: DatasetWriter,
        progress: Progress,
    ) -> list[ReduceResult]:
        _WORKER.update(ctx=ctx, writer=writer)
        results = []
        started = time.perf_counter()
        peak = 0.0
        order = largest_first(ctx, partitions, shards) if self.workers > 1 else partitions
        for result, rss in self._run(ctx, _reduce_task, [(partition, list(shards)) for partition in order]):
            progress.advance(1, result.records)
            results.append(result)
            peak = max(peak, rss)
            kill_hook("reduce", len(results))
        self._end_pool()
        log_phase("local", "reduce", started, sum(r.seconds for r in results), sum(r.records for r in results))
        log.info("reduce: peak RSS of a worker %.0f MiB", peak)
        return results

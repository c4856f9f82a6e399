"""The ray executor's map and reduce as Ray Data pipelines: the records travel through Ray's object store, not
through spill files.

- map: `read_datasource` with one read task per input shard, running the source's own reader (`ShardReader`: field
  maps, origins, derived ids and parse-stage quarantine rows are those of a local run). Each read task yields one row
  per batch of parsed records (with their handles); `map_batches` runs the chain over each batch (`ShardMapper.
  map_batch`: record steps, the global steps' keys, every record's partition by distill's own hash of its group key)
  and yields one row per (batch, partition) holding that partition's entries; Ray Data fuses the read and the chain
  into one task per shard, and the rows are materialized in the object store. The keys and ids the decide phase
  reads are written by distill's spill writers, one piece per batch; a last pass (`groupby` on the shard, over the
  small rows only) joins each shard's pieces in batch order into the shard's spills, so decide reads them exactly
  as after a local map.
- reduce: after decide, the materialized rows, plus one MARK row per partition, go through a Ray Data shuffle on
  distill's partition number (`groupby("partition").map_groups`); each group is one partition's entries, sorted
  by handle (read order), which `reduce_partition` turns into examples with distill's writers, under distill's
  names. Rows that hold no records (partition -1) make a group no partition owns, and are skipped.

A DistillError raised inside a task comes back as a row (Ray Data keeps only a wrapped exception's text) and is
raised as itself in the driver: one line for the user.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from distill.collector import cyclic_gc_paused
from distill.curation.steps.base import GlobalStep
from distill.errors import DistillError
from distill.executor.ray import claim_fault, hang_until_killed, worker_context, worker_value
from distill.plan.context import PlanContext
from distill.plan.map import SHARD_SHIFT, MapResult, ShardMapper, ShardReader, piece_path, read_part
from distill.plan.reduce import reduce_partition
from distill.plan.spill import read_marker
from distill.record import load_stored_records
from distill.sources.base import Shard

# What a row of the pipelines holds (the `kind` column).
BATCH = 0
"""A read task's batch of parsed records: payload = (records, handles)."""
SHARD = 1
"""A read task's last row: payload = its MapResult (rows, parse-stage drops, inputs) and `piece` = its batch count."""
PART = 2
"""One batch's entries for one partition: payload = [(handle, record, pending drop)], `first` = the first handle."""
PIECE = 3
"""What mapping one batch counted: payload = PieceResult."""
DONE = 4
"""A finished shard (after its pieces are joined) or partition: payload = its MapResult or ReduceResult."""
FAILED = 5
"""A DistillError raised in a task: payload = the error, raised as itself in the driver."""
MARK = 6
"""One per partition to reduce, so a partition no record went to is reduced (and written) too."""

SCHEMA = pa.schema([
    ("kind", pa.int8()), ("shard", pa.int64()), ("piece", pa.int64()), ("partition", pa.int64()),
    ("first", pa.int64()), ("payload", pa.large_binary()),
])
"""Every row of the map's dataset; large_binary, because one partition's payloads may pass 2 GiB in a block."""


def rows(items: Iterable[tuple[int, int, int, int, int, bytes]]) -> pa.Table:
    """A table of (kind, shard, piece, partition, first, payload) rows."""
    columns = list(zip(*items)) or [[] for _ in SCHEMA]
    return pa.Table.from_arrays([pa.array(values, type=f.type) for values, f in zip(columns, SCHEMA)], schema=SCHEMA)


def dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def failed_row(error: DistillError, shard: int = -1, partition: int = -1) -> tuple[int, int, int, int, int, bytes]:
    return (FAILED, shard, -1, partition, -1, dumps(error))


def results(table: pa.Table) -> Iterator[Any]:
    """The payloads of a pipeline's DONE rows; a FAILED row raises its DistillError."""
    for kind, payload in zip(table["kind"].to_pylist(), table["payload"].to_pylist()):
        if kind == FAILED:
            raise pickle.loads(payload)
        if kind == DONE:
            yield pickle.loads(payload)


# -- map ---------------------------------------------------------------------------------------------------------


@dataclass
class PieceResult:
    """What mapping one batch counted, summed per shard when its pieces are joined."""

    counters: dict[str, Counter[str]]
    partitions: list[int]
    """The partitions this batch sent entries to (one PART row each): the reduce checks it got them all."""
    seconds: float


class PartitionRows:
    """A ShardMapper sink that keeps one batch's entries per partition, to leave the task as PART rows."""

    def __init__(self) -> None:
        self.entries: dict[int, list[Any]] = {}

    def write(self, partition: int, entries: list[Any]) -> None:
        self.entries.setdefault(partition, []).extend(entries)

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass


def read_shard(token: str, holder: list[Any], shard: Shard) -> Iterator[pa.Table]:
    """A read task: the shard through the source's own reader, one BATCH row per batch, then its SHARD row (the
    parse stage's quarantine rows are in the shard's map quarantine spill by then)."""
    with cyclic_gc_paused(collect_after=True):
        yield from read_batches(token, holder, shard)


def read_batches(token: str, holder: list[Any], shard: Shard) -> Iterator[pa.Table]:
    ctx = worker_context(token, holder)
    result = MapResult(shard.index)
    reader = ShardReader(ctx, shard, result)
    batches = reader.batches()
    pieces = 0
    try:
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            result.seconds += time.perf_counter() - started
            if batch is None:
                break
            records, handles = batch
            yield rows([(BATCH, shard.index, pieces, -1, handles[0], dumps((records, handles)))])
            pieces += 1
        started = time.perf_counter()
        reader.finish()
        result.seconds += time.perf_counter() - started
    except DistillError as error:
        yield rows([failed_row(error, shard=shard.index)])
        return
    yield rows([(SHARD, shard.index, pieces, -1, -1, dumps(result))])


class ShardsDatasource(Datasource):
    """The run's input as a Ray Data datasource: one read task per distill shard, in the plan's read order."""

    def __init__(self, token: str, holder: list[Any], shards: Sequence[Shard]) -> None:
        super().__init__()
        self.token = token
        self.holder = holder
        self.shards = list(shards)

    def get_name(self) -> str:
        return "DistillShards"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, **_: Any) -> list[ReadTask]:
        return [
            ReadTask(
                partial(read_shard, self.token, self.holder, shard),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None),
            )
            for shard in self.shards
        ]


def map_batch_rows(ctx: PlanContext, shard: int, piece: int, payload: bytes, fault: str | None) -> list[tuple]:
    """The chain over one batch: its PART rows (one per partition it sends entries to) and its PIECE row; the keys
    and ids go to this piece's spills."""
    started = time.perf_counter()
    records, handles = pickle.loads(payload)
    steps = ctx.settings.steps
    for step in steps:
        step.counters = Counter()
    sink = PartitionRows()
    mapper = ShardMapper(ctx, Shard(shard), sink=sink, piece=piece)
    try:
        mapper.map_batch(records, handles)
        claimed = claim_fault(fault, "map")
        if claimed is not None:
            hang_until_killed(claimed)  # with this piece's spills open
        mapper.close()
    except BaseException:
        mapper.abandon()
        raise
    out = [
        (PART, shard, piece, partition, entries[0][0], dumps(entries)) for partition, entries in sink.entries.items()
    ]
    counters = {step.name: Counter(step.counters) for step in steps if step.counters}
    done = PieceResult(counters, sorted(sink.entries), time.perf_counter() - started)
    out.append((PIECE, shard, piece, -1, -1, dumps(done)))
    return out


def map_batches(table: pa.Table, token: str, holder: list[Any], fault: str | None) -> pa.Table:
    """`map_batches`: each BATCH row mapped; every other row passes through."""
    with cyclic_gc_paused(collect_after=True):
        return map_rows(table, token, holder, fault)


def map_rows(table: pa.Table, token: str, holder: list[Any], fault: str | None) -> pa.Table:
    ctx = worker_context(token, holder)
    payloads = table["payload"]  # read row by row: a block holds many batches, each unpickled only in its turn
    out: list[tuple] = []
    passed = []
    for i, (kind, shard, piece) in enumerate(zip(
        table["kind"].to_pylist(), table["shard"].to_pylist(), table["piece"].to_pylist()
    )):
        if kind != BATCH:
            passed.append(i)
            continue
        try:
            out.extend(map_batch_rows(ctx, shard, piece, payloads[i].as_py(), fault))
        except DistillError as error:
            out = [failed_row(error, shard=shard)]
            break
    return pa.concat_tables([table.take(pa.array(passed, type=pa.int64())), rows(out)])


def not_records(table: pa.Table) -> pa.Table:
    """The rows of the map's dataset that are not records: what joining the shards' pieces reads."""
    import pyarrow.compute as pc

    return table.filter(pc.not_equal(table["kind"], PART))


def join_pieces(ctx: PlanContext, shard: int, pieces: int) -> None:
    """The shard's key and id spills from its pieces, in batch order (a spill is a sequence of frames, so the
    joined file is the spill one task mapping the whole shard would have written). Written under a temporary name
    and renamed; a retried join finds the pieces gone and the spill in place."""
    positions = [p for p, step in enumerate(ctx.settings.steps) if isinstance(step, GlobalStep)]
    for path in [ctx.layout.ids(shard), *(ctx.layout.keys(position, shard) for position in positions)]:
        parts = [piece_path(path, piece) for piece in range(pieces)]
        if all(part.exists() for part in parts):
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with temporary.open("wb") as out:
                for part in parts:
                    with part.open("rb") as handle:
                        shutil.copyfileobj(handle, out)
            os.replace(temporary, path)
        elif not path.exists():
            raise RuntimeError(f"shard {shard}: pieces of {path.name} are missing")
        for part in parts:
            part.unlink(missing_ok=True)


def join_shard(table: pa.Table, token: str, holder: list[Any]) -> pa.Table:
    """`map_groups` over one shard's SHARD and PIECE rows: its pieces joined, its MapResult as a DONE row."""
    kinds, pieces, payloads = table["kind"].to_pylist(), table["piece"].to_pylist(), table["payload"].to_pylist()
    shard = table["shard"][0].as_py()
    for kind, payload in zip(kinds, payloads):
        if kind == FAILED:
            return rows([(FAILED, shard, -1, -1, -1, payload)])
    listed = list(zip(kinds, pieces, payloads))
    ((count, read),) = [(piece, pickle.loads(payload)) for kind, piece, payload in listed if kind == SHARD]
    done = {piece: pickle.loads(payload) for kind, piece, payload in listed if kind == PIECE}
    if sorted(done) != list(range(count)):
        raise RuntimeError(f"shard {shard}: {len(done)} of its {count} batches were mapped")
    ctx = worker_context(token, holder)
    join_pieces(ctx, shard, count)
    result: MapResult = read
    parts: Counter[int] = Counter()
    for piece in range(count):
        result.seconds += done[piece].seconds
        for name, counts in done[piece].counters.items():
            result.counters.setdefault(name, Counter()).update(counts)
        parts.update(done[piece].partitions)
    return rows([(DONE, shard, -1, -1, -1, dumps((result, dict(parts))))])


# -- reduce ------------------------------------------------------------------------------------------------------


def partition_entries(
    ctx: PlanContext, partition: int, table: pa.Table, earlier: Sequence[int]
) -> Iterator[tuple[int, Any, Any]]:
    """The partition's entries in handle order (read order): this run's PART rows and, for shards an earlier run
    mapped (a resumed run), their part spills. Handles of different rows never interleave (a row is one batch's
    contiguous run of one shard's records), so sorting the rows by their first handle orders every entry."""
    payloads = table["payload"]
    sources: list[tuple[int, Callable[[], Iterable[Any]]]] = [
        (first, lambda i=i: load_stored_records(payloads[i].as_py()))
        for i, (kind, first) in enumerate(zip(table["kind"].to_pylist(), table["first"].to_pylist()))
        if kind == PART
    ]
    for shard in earlier:
        path = ctx.layout.part(partition, shard)
        sources.append((shard << SHARD_SHIFT, lambda path=path: read_part(path)))
    sources.sort(key=lambda source: source[0])
    return itertools.chain.from_iterable(load() for _, load in sources)


@dataclass
class ReduceJob:
    """What every reduce group needs besides its rows (small: a few numbers per partition)."""

    token: str
    holder: list[Any]
    writer: list[Any]
    todo: set[int]
    expected: dict[int, int]
    """Partition -> PART rows the map sent it; a group that got fewer was split, and must not be reduced."""
    earlier: list[int] = field(default_factory=list)
    fault: str | None = None


def reduce_group(table: pa.Table, job: ReduceJob) -> pa.Table:
    """`map_groups` over one partition: its entries, in handle order, through `reduce_partition`."""
    with cyclic_gc_paused(collect_after=True):
        return reduce_rows(table, job)


def reduce_rows(table: pa.Table, job: ReduceJob) -> pa.Table:
    partition = table["partition"][0].as_py()
    if partition not in job.todo:
        return rows([])
    ctx = worker_context(job.token, job.holder)
    done = read_marker(ctx.layout.reduce_done(partition))
    if done is None:
        got = sum(1 for kind in table["kind"].to_pylist() if kind == PART)
        if got != job.expected.get(partition, 0):
            wanted = job.expected.get(partition, 0)
            raise RuntimeError(f"partition {partition}: the shuffle gave {got} of its {wanted} record batches")
        claimed = claim_fault(job.fault, "reduce")
        if claimed is not None:
            hang_until_killed(claimed)
        writer = worker_value(job.token, "writer", job.writer)
        entries = partition_entries(ctx, partition, table, job.earlier)
        try:
            done = reduce_partition(ctx, partition, job.earlier, writer, entries)
        except DistillError as error:
            return rows([failed_row(error, partition=partition)])
    return rows([(DONE, -1, -1, partition, -1, dumps(done))])


def marks(partitions: Iterable[int]) -> pa.Table:
    return rows([(MARK, -1, -1, partition, -1, b"") for partition in partitions])

"""Map, parallel over input shards: read -> parse -> the chain's record steps in order -> the keys of each global
step at its place in the chain -> every record to its group's partition.

A record a record step drops still goes to its partition, with the drop pending: only the decide phase knows
whether an earlier global step (or the repeated-id check of the parse stage) claims it first, and the chat tasks
need to see the holes drops leave in a conversation. Nothing here waits for another shard.

Reading a shard into batches (`ShardReader`) and running the chain over a batch (`ShardMapper.map_batch`) are
separate pieces, and the records go to a sink: the local executor maps a whole shard into partition spills; the ray
executor reads in a Ray Data read task and maps each batch in `map_batches`, its records leaving as rows.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from distill.curation.steps.base import GlobalStep, RecordStep, Step
from distill.hashing import hash64
from distill.output.files import jsonl_bytes
from distill.plan.context import PlanContext
from distill.plan.spill import (
    FRAME_BYTES, FRAME_ITEMS, SpillWriter, read_values, write_line_spill, write_marker,
)
from distill.quarantine import Drop, QuarantineRow
from distill.record import Origin, Record, load_stored_records, order_micros, packed_records, unpacked_records
from distill.sources.base import Shard

PARSE_STEP = "parse"
SHARD_SHIFT = 32
"""A record's handle is (shard index << 32) | its ordinal in the shard: unique, fixed-width, in read order."""


@dataclass
class MapResult:
    """What one shard sent, for the manifest and the ledger (the records themselves are in the spills)."""

    shard: int
    rows: int = 0
    records: int = 0
    parse_dropped: Counter[str] = field(default_factory=Counter)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: float = 0.0


def redact_row(steps: Any, row: dict[str, Any]) -> dict[str, Any]:
    for step in steps:
        row = step.redact_quarantine_row(row)
    return row


def redacts_rows(steps: Any) -> bool:
    """Whether a step rewrites quarantine rows (overrides `Step.redact_quarantine_row`, as scrub_secrets does)."""
    return any(type(step).redact_quarantine_row is not Step.redact_quarantine_row for step in steps)


QuarantineEntry = tuple[Any, tuple[str, str | None], bytes]
"""A quarantine row as a quarantine spill (`write_line_spill`) holds it: its place in the file, what the merge notes
of it (its reason and record id: `QuarantineRows`) and its JSON line."""


def quarantine_entry(steps: Any, row: QuarantineRow, redacting: bool | None = None) -> QuarantineEntry:
    """A quarantine row as its spills hold it (`QuarantineEntry`): its sort key, (reason, record id) and its redacted
    JSON line. The merge counts and samples from the first two without decoding every line again. When no step
    redacts, the row's record comes already encoded (`QuarantineRow.to_json`'s `encoded`), so its line encodes the
    record once. `redacting`: `redacts_rows(steps)`, when a caller writing many rows has it already."""
    if redacting is None:
        redacting = redacts_rows(steps)
    redacted = redact_row(steps, row.to_json()) if redacting else row.to_json(encoded=True)
    return spill_entry(row.sort_key(), redacted)


def spill_entry(place: Any, row: dict[str, Any]) -> QuarantineEntry:
    """A quarantine row's JSON (`row_json`) as its spills hold it (`QuarantineEntry`)."""
    return (place, (row["reason"], row.get("record_id")), jsonl_bytes(row))


class PartitionSink(Protocol):
    """Where a mapped batch's records go: each partition's (handle, record, pending drop) entries, in handle order."""

    def write(self, partition: int, entries: list[Any]) -> None: ...

    def close(self) -> None: ...

    def abandon(self) -> None: ...


class PackedEntries(NamedTuple):
    """One write's (handle, record, pending drop) entries for a partition spill, the records packed as one blob
    (`packed_records`)."""

    handles: list[int]
    pending: list[Any]
    records: bytes

    def entries(self) -> Iterator[tuple[int, Any, Any]]:
        return zip(self.handles, unpacked_records(self.records), self.pending)


@dataclass(frozen=True)
class LineLabels:
    """A batch's `<file>:<line>` labels (`Origin.label`) when all its records were read from one file's lines, held
    as the line numbers and built only when asked: the ids spill holds each record's label for the drop of a
    repeated id, which few runs have (0.14 -> 0.06 µs a record to make, and less to pickle and load)."""

    path: str
    lines: np.ndarray

    def __getitem__(self, index: int) -> str:
        return Origin(path=self.path, line=int(self.lines[index])).label()  # one spelling of a label: Origin's


def labels_at(labels: LineLabels | list[str], index: np.ndarray) -> LineLabels | list[str]:
    """The labels of the records at `index`, held as they were."""
    if isinstance(labels, LineLabels):
        return LineLabels(labels.path, labels.lines[index])
    return [labels[i] for i in index.tolist()]


def row_labels(records: list[Record]) -> LineLabels | list[str]:
    """Each record's place as a repeated id's drop names it: `LineLabels` for a batch of one file's lines, else the
    labels themselves."""
    origins = [record.origin for record in records]
    first = origins[0] if origins else None
    if first is not None and first.path is not None and first.line is not None:
        path = first.path
        lines = [o.line if o is not None and o.path == path else None for o in origins]
        if None not in lines:
            return LineLabels(path, np.array(lines, dtype=np.int64))
    return [origin.label() if origin else "an earlier row" for origin in origins]


def read_part(path: Path) -> Iterator[tuple[int, Any, Any]]:
    """A partition spill's (handle, record, pending drop) entries in the order written, each record a
    `StoredRecord`; a missing spill is empty."""
    for item in read_values(path, load_stored_records):
        if type(item) is PackedEntries:
            yield from item.entries()
        else:
            yield item


FIRST_PACK_RECORDS = 128
"""How many records a shard's first pack holds, before its bytes say how many make FRAME_BYTES."""
HELD_PACK_BYTES = 16 << 20
"""How many bytes of packed records a shard's spills hold back in all, to write few frames of many small packs."""


class PartitionSpills:
    """Where a shard's records go by default: one spill per partition, which that partition's reduce reads
    (`read_part`). Each write's records are packed in one blob when they can be, at once, while the batch is in the
    CPU's caches. A batch spread over many partitions makes small packs (1,024 records over 18 partitions: ~57 each),
    so a partition's packs are held until they make a frame of about FRAME_BYTES, or HELD_PACK_BYTES over all the
    partitions allow less: at 1e6 bench records, frames of single ~100 KB packs doubled the kernel's time in the
    reduce (bench/RESULTS.md, "Chunks that fit a core's cache")."""

    def __init__(self, ctx: PlanContext, shard: int) -> None:
        self.ctx = ctx
        self.shard = shard
        self.writers: dict[int, SpillWriter] = {}
        self.pack_records = FIRST_PACK_RECORDS
        self.frame_bytes = max(1, min(FRAME_BYTES, HELD_PACK_BYTES // max(ctx.partitions, 1)))
        self.held: dict[int, list[PackedEntries]] = {}
        self.held_bytes: dict[int, int] = {}

    def write(self, partition: int, entries: list[Any]) -> None:
        writer = self.writers.get(partition)
        if writer is None:
            writer = self.writers[partition] = SpillWriter(
                self.ctx.layout.part(partition, self.shard), compress=self.ctx.compress
            )
        start = 0
        while start < len(entries):
            # Packs of at most about FRAME_BYTES each, sized from the last pack's bytes per record: a whole batch in
            # one pack (~7 MB where a run has 2 partitions) took a fresh mapping per write, whose page faults cost
            # more than the packing saved.
            chunk = entries[start : start + self.pack_records]
            start += len(chunk)
            packed = packed_records([record for _, record, _ in chunk])
            if packed is None:
                self._release(partition)  # what was held goes first: a partition's entries stay in handle order
                writer.write(chunk)
                continue
            self.pack_records = max(1, min(FRAME_ITEMS, len(chunk) * FRAME_BYTES // max(len(packed), 1)))
            self.held.setdefault(partition, []).append(
                PackedEntries([entry[0] for entry in chunk], [entry[2] for entry in chunk], packed)
            )
            self.held_bytes[partition] = self.held_bytes.get(partition, 0) + len(packed)
            if self.held_bytes[partition] >= self.frame_bytes:
                self._release(partition)

    def _release(self, partition: int) -> None:
        """Writes the packs held for `partition` as one frame."""
        packs = self.held.pop(partition, None)
        if packs:
            self.writers[partition].write_frame(packs)
        self.held_bytes[partition] = 0

    def close(self) -> None:
        for partition in list(self.held):
            self._release(partition)
        for writer in self.writers.values():
            writer.close()

    def abandon(self) -> None:
        for writer in self.writers.values():
            writer.abandon()


def piece_path(path: Path, piece: int | None) -> Path:
    """The spill of one piece of a shard (`3.spill` -> `3.7.spill`): an executor that maps a shard's batches in
    separate tasks joins its pieces, in order, into the shard's spill."""
    return path if piece is None else path.with_name(f"{path.stem}.{piece}{path.suffix}")


class ShardReader:
    """Reads one shard with the source's own reader into batches of records, each record with its handle; a batch
    never holds one id twice, so a global step's key names one record of its batch. Parse-stage drops become the
    shard's quarantine rows, written sorted by `finish`."""

    def __init__(self, ctx: PlanContext, shard: Shard, result: MapResult) -> None:
        self.ctx = ctx
        self.shard = shard
        self.result = result
        self.quarantine: list[QuarantineEntry] = []

    def batches(self) -> Iterator[tuple[list[Record], list[int]]]:
        steps = self.ctx.settings.steps
        redacting = redacts_rows(steps)
        batch_size = self.ctx.settings.batch_size
        batch: list[Record] = []
        handles: list[int] = []
        ids: set[str] = set()
        result = self.result
        # Counted in locals, written back to the result at each batch: this loop runs once per row.
        rows, records = result.rows, result.records
        first_handle = self.shard.index << SHARD_SHIFT
        for parsed in self.ctx.settings.source.read_shard(self.shard):
            rows += 1
            if isinstance(parsed, QuarantineRow):
                result.parse_dropped[parsed.reason.value] += 1
                self.quarantine.append(quarantine_entry(steps, parsed, redacting))
                continue
            record_id = parsed.id
            if record_id in ids:
                result.rows, result.records = rows, records
                yield batch, handles
                batch, handles, ids = [], [], set()
            records += 1
            batch.append(parsed)
            handles.append(first_handle | records)
            ids.add(record_id)
            if len(batch) >= batch_size:
                result.rows, result.records = rows, records
                yield batch, handles
                batch, handles, ids = [], [], set()
        result.rows, result.records = rows, records
        if batch:
            yield batch, handles

    def finish(self) -> None:
        self.quarantine.sort(key=lambda entry: entry[0])
        spill = self.ctx.layout.map_quarantine(self.shard.index)
        write_line_spill(
            spill, self.quarantine, compress=self.ctx.compress, frame_bytes=self.ctx.quarantine_frame_bytes
        )
        self.result.inputs = self.ctx.settings.source.shard_inputs(self.shard)


class ShardMapper:
    """Maps one shard (or, with `piece`, one piece of it): holds the key and id spill writers and runs the chain
    over each batch. Each partition's records go to `sink` (default: the partition spills)."""

    def __init__(
        self, ctx: PlanContext, shard: Shard, sink: PartitionSink | None = None, piece: int | None = None
    ) -> None:
        self.ctx = ctx
        self.shard = shard
        self.steps = ctx.settings.steps
        self.result = MapResult(shard.index)
        self.parts = sink if sink is not None else PartitionSpills(ctx, shard.index)
        self.keys = {
            position: SpillWriter(piece_path(ctx.layout.keys(position, shard.index), piece), compress=ctx.compress)
            for position, step in enumerate(self.steps)
            if isinstance(step, GlobalStep)
        }
        self.ids = SpillWriter(piece_path(ctx.layout.ids(shard.index), piece), compress=ctx.compress)

    def run(self) -> MapResult:
        started = time.perf_counter()
        for step in self.steps:
            step.counters = Counter()
        reader = ShardReader(self.ctx, self.shard, self.result)
        try:
            for records, handles in reader.batches():
                self.map_batch(records, handles)
            self.close()
            reader.finish()
        except BaseException:
            self.abandon()
            raise
        self.result.counters = {step.name: Counter(step.counters) for step in self.steps if step.counters}
        self.result.seconds = time.perf_counter() - started
        return self.result

    def map_batch(self, records: list[Record], handles: list[int]) -> None:
        """The chain over one batch: record steps, each global step's keys at its place, and every record, with
        its pending drop, to its group's partition."""
        group_key = self.ctx.settings.group_key
        partitions = self.ctx.partitions_of(map(group_key, records))
        pending: list[tuple[int, Drop] | None] = [None] * len(records)
        alive = list(range(len(records)))
        for position, step in enumerate(self.steps):
            if not alive:
                break
            current = [records[i] for i in alive]
            if isinstance(step, RecordStep):
                verdicts = step.map_batch(current)
                survivors = []
                for i, verdict in zip(alive, verdicts):
                    if isinstance(verdict, Drop):
                        pending[i] = (position, verdict)
                    else:
                        records[i] = verdict
                        survivors.append(i)
                alive = survivors
            else:
                keys = step.keys(current)
                if keys.ids == [records[i].id for i in alive]:
                    keyed = alive  # a key for every record, in batch order (most steps, most batches): no look-up
                else:  # each key's record found by its id, which names one record of the batch (`ShardReader`)
                    where = {records[i].id: i for i in alive}
                    keyed = [where[record_id] for record_id in keys.ids]
                self.keys[position].write([(
                    np.array([handles[i] for i in keyed], dtype=np.uint64),
                    np.array([partitions[i] for i in keyed], dtype=np.uint32),
                    np.array([order_micros(records[i].created_at) for i in keyed], dtype=np.int64),
                    keys,
                )])
        by_partition: dict[int, list[Any]] = {}
        for i, record in enumerate(records):
            by_partition.setdefault(partitions[i], []).append((handles[i], record, pending[i]))
        for partition, entries in by_partition.items():
            self.parts.write(partition, entries)
        self.ids.write([(
            np.array([hash64(record.id) for record in records], dtype=np.uint64),
            np.array(handles, dtype=np.uint64),
            np.array(partitions, dtype=np.uint32),
            [record.id for record in records],
            row_labels(records),
        )])

    def close(self) -> None:
        for writer in [self.parts, *self.keys.values(), self.ids]:
            writer.close()

    def abandon(self) -> None:
        for writer in [self.parts, *self.keys.values(), self.ids]:
            writer.abandon()


def map_shard(ctx: PlanContext, shard: Shard) -> MapResult:
    """Maps one shard and leaves its completion marker (written last: a marker means every spill is whole)."""
    result = ShardMapper(ctx, shard).run()
    write_marker(ctx.layout.map_done(shard.index), result)
    return result

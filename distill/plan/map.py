"""Map, parallel over input shards: read -> parse -> the chain's record steps in order -> the keys of each global
step at its place in the chain -> every record to its group's partition.

A record a record step drops still goes to its partition, with the drop pending: only the decide phase knows
whether an earlier global step (or the repeated-id check of the parse stage) claims it first, and the chat tasks
need to see the holes drops leave in a conversation. Nothing here waits for another shard.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from distill.curation.steps.base import GlobalStep, RecordStep
from distill.hashing import hash64
from distill.output.files import jsonl_bytes
from distill.plan.context import PlanContext
from distill.plan.spill import SpillWriter, write_marker, write_spill
from distill.quarantine import Drop, QuarantineRow
from distill.record import Record
from distill.sources.base import Shard

PARSE_STEP = "parse"
SHARD_SHIFT = 32
"""A record's handle is (shard index << 32) | its ordinal in the shard: unique, fixed-width, in read order."""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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


def created_micros(record: Record) -> int:
    """The first half of the (created_at, id) order key as a fixed-width integer (undated records first)."""
    if record.created_at is None:
        return 0
    delta = record.created_at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def redact_row(steps: Any, row: dict[str, Any]) -> dict[str, Any]:
    for step in steps:
        row = step.redact_quarantine_row(row)
    return row


def quarantine_entry(steps: Any, row: QuarantineRow) -> tuple[Any, str, str | None, bytes]:
    """A quarantine row as its spills hold it: (sort key, reason, record id, the redacted JSON line). The merge
    counts and samples from the first three without decoding every line again."""
    redacted = redact_row(steps, row.to_json())
    return (row.sort_key(), redacted["reason"], redacted.get("record_id"), jsonl_bytes(redacted))


class ShardMapper:
    """Maps one shard: holds the spill writers and the batch being built."""

    def __init__(self, ctx: PlanContext, shard: Shard) -> None:
        self.ctx = ctx
        self.shard = shard
        self.steps = ctx.settings.steps
        self.result = MapResult(shard.index)
        self.quarantine: list[tuple[Any, bytes]] = []
        self.parts: dict[int, SpillWriter] = {}
        self.keys = {
            position: SpillWriter(ctx.layout.keys(position, shard.index), compress=ctx.compress)
            for position, step in enumerate(self.steps)
            if isinstance(step, GlobalStep)
        }
        self.ids = SpillWriter(ctx.layout.ids(shard.index), compress=ctx.compress)
        self.batch: list[Record] = []
        self.handles: list[int] = []
        self.batch_ids: set[str] = set()
        self.ordinal = 0

    def run(self) -> MapResult:
        started = time.perf_counter()
        for step in self.steps:
            step.counters = Counter()
        batch_size = self.ctx.settings.batch_size
        try:
            for parsed in self.ctx.settings.source.read_shard(self.shard):
                self.result.rows += 1
                if isinstance(parsed, QuarantineRow):
                    self.result.parse_dropped[parsed.reason.value] += 1
                    self.quarantine.append(quarantine_entry(self.steps, parsed))
                    continue
                # A batch never holds one id twice, so a key's id names one record of its batch.
                if parsed.id in self.batch_ids:
                    self.flush()
                self.add(parsed)
                if len(self.batch) >= batch_size:
                    self.flush()
            self.flush()
            self.finish()
        except BaseException:
            for writer in [*self.parts.values(), *self.keys.values(), self.ids]:
                writer.abandon()
            raise
        self.result.inputs = self.ctx.settings.source.shard_inputs(self.shard)
        self.result.counters = {step.name: Counter(step.counters) for step in self.steps if step.counters}
        self.result.seconds = time.perf_counter() - started
        return self.result

    def add(self, record: Record) -> None:
        self.ordinal += 1
        self.result.records += 1
        self.batch.append(record)
        self.handles.append((self.shard.index << SHARD_SHIFT) | self.ordinal)
        self.batch_ids.add(record.id)

    def flush(self) -> None:
        if not self.batch:
            return
        records, handles = self.batch, self.handles
        group_key = self.ctx.settings.group_key
        partitions = [self.ctx.partition_of(group_key(record)) for record in records]
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
                where = {records[i].id: i for i in alive}
                keyed = [where[record_id] for record_id in keys.ids]
                self.keys[position].write([(
                    np.array([handles[i] for i in keyed], dtype=np.uint64),
                    np.array([partitions[i] for i in keyed], dtype=np.uint32),
                    np.array([created_micros(records[i]) for i in keyed], dtype=np.int64),
                    keys,
                )])
        by_partition: dict[int, list[Any]] = {}
        for i, record in enumerate(records):
            by_partition.setdefault(partitions[i], []).append((handles[i], record, pending[i]))
        for partition, entries in by_partition.items():
            writer = self.parts.get(partition)
            if writer is None:
                writer = self.parts[partition] = SpillWriter(
                    self.ctx.layout.part(partition, self.shard.index), compress=self.ctx.compress
                )
            writer.write(entries)
        self.ids.write([(
            np.array([hash64(record.id) for record in self.batch], dtype=np.uint64),
            np.array(handles, dtype=np.uint64),
            np.array(partitions, dtype=np.uint32),
            [record.id for record in self.batch],
            [record.origin.label() if record.origin else "an earlier row" for record in self.batch],
        )])
        self.batch, self.handles, self.batch_ids = [], [], set()

    def finish(self) -> None:
        for writer in [*self.parts.values(), *self.keys.values(), self.ids]:
            writer.close()
        self.quarantine.sort(key=lambda entry: entry[0])
        write_spill(self.ctx.layout.map_quarantine(self.shard.index), [self.quarantine], compress=self.ctx.compress)


def map_shard(ctx: PlanContext, shard: Shard) -> MapResult:
    """Maps one shard and leaves its completion marker (written last: a marker means every spill is whole)."""
    result = ShardMapper(ctx, shard).run()
    write_marker(ctx.layout.map_done(shard.index), result)
    return result

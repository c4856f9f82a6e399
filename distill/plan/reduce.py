"""Reduce, parallel over partitions: apply the decisions, group, split, run the task, check every line against
its schema, and leave sorted example and quarantine spills plus this partition's share of the stats and counts.

Groups never span partitions, so everything a task or the split decides about a group is decided here whole.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from distill.errors import DistillError
from distill.grouping import Group, display_key, group_records
from distill.output.flavours.render import FlavourOutput, Rendered
from distill.output.stats import StatsPart, stats_part
from distill.output.writers import DatasetWriter, output_file_name
from distill.plan.context import PlanContext
from distill.plan.decide import REPEATED_ID
from distill.plan.map import PARSE_STEP, QuarantineEntry, quarantine_entry, read_part, redacts_rows, spill_entry
from distill.plan.prepare import MEMORY_PER_INPUT_BYTE
from distill.plan.spill import BY_PLACE, plain_spill_bytes, read_values, write_line_spill, write_marker
from distill.quarantine import Drop, QuarantineRow, RowSink, close_accounts, place_key, row_json
from distill.reasons import Reason
from distill.record import RECORD_CLASSES, Record, sort_in_order
from distill.split import assign_sides
from distill.tasks.base import Example, Task
from distill.tokens import TokenCounter
from distill.validation import schema_errors

WRITE_STEP = "write"


def tally(counts: dict[Any, Counter[str]], key: Any, reason: str) -> None:
    """One drop counted under `key`: not `counts.setdefault(key, Counter())`, which builds a Counter for every drop
    (a reduce counts a quarter of its records so)."""
    reasons = counts.get(key)
    if reasons is None:
        reasons = counts[key] = Counter()
    reasons[reason] += 1


@dataclass
class TaskResult:
    """What the task made of every split side, after the write-time schema check."""

    examples_by_side: dict[str, list[Example]]
    drops_by_step: dict[str, Counter[str]]
    counts: Counter[str]
    rendered_by_side: dict[str, list[Rendered]] = field(default_factory=dict)
    """Each side's lines in the run's output.flavor, aligned with examples_by_side."""

    @cached_property
    def exported(self) -> dict[str, Record]:
        """Every record a written line uses, by id, once however many lines it feeds."""
        return {r.id: r for examples in self.examples_by_side.values() for e in examples for r in e.records}


def build_examples(
    task: Task, sides: dict[str, list[Group]], ledger: RowSink, flavour: FlavourOutput | None = None
) -> TaskResult:
    """Runs the task on each side and checks every line against the task's schema (the firewall's second layer),
    then renders the valid lines in the run's output flavour, which refuses a line its trainer would reject. A
    rejected line is never written: its records are quarantined (`schema_violation`, or the flavour's reason)
    unless a written line uses them too."""
    result = TaskResult({}, {}, Counter())
    invalid: list[tuple[Example, Reason, Sequence[str]]] = []
    for side, side_groups in sides.items():
        output = task.build(side_groups)
        result.counts.update(output.counts)
        for step, record, drop in output.drops:
            ledger.drop(step, record, drop)
            tally(result.drops_by_step, step, drop.reason.value)
        valid = []
        for example in output.examples:
            errors = schema_errors(task.schema, example.line)
            if errors:
                invalid.append((example, Reason.schema_violation, errors))
            else:
                valid.append(example)
        result.examples_by_side[side] = sorted(valid, key=Example.sort_key)
        if flavour is not None and not flavour.writes_examples_as_built:
            # output.flavor: only valid canonical lines are re-rendered; a refused one goes the way of an invalid one.
            # (The default trl flavour writes each example's own line: nothing to render, nothing it refuses.)
            file_name = output_file_name(task.output_name, side, flavour.output_format)
            rendered, refused = flavour.render(result.examples_by_side[side], file_name)
            gone = {id(line.example) for line in refused}
            result.examples_by_side[side] = [e for e in result.examples_by_side[side] if id(e) not in gone]
            result.rendered_by_side[side] = rendered
            invalid.extend((line.example, line.reason, line.errors) for line in refused)
    written_off: set[str] = set()
    write_drops = result.drops_by_step.setdefault(WRITE_STEP, Counter())
    for example, reason, errors in invalid:
        for record in example.records:
            if record.id not in result.exported and record.id not in written_off:
                written_off.add(record.id)  # one quarantine row per record, however many lines it was in
                ledger.drop(WRITE_STEP, record, Drop(reason, tuple(errors), {"example_id": example.id}))
                write_drops[reason.value] += 1
    return result


@dataclass
class SideResult:
    examples: int
    groups: int
    stats: StatsPart


@dataclass
class ReduceResult:
    """One partition's share of the counts, stages, stats and the time range of what it exported."""

    partition: int
    records: int = 0
    repeated_ids: int = 0
    chain_drops: dict[int, Counter[str]] = field(default_factory=dict)
    task_drops: dict[str, Counter[str]] = field(default_factory=dict)
    task_counts: Counter[str] = field(default_factory=Counter)
    exported: int = 0
    quarantined: int = 0
    sides: dict[str, SideResult] = field(default_factory=dict)
    created_at: tuple[Any, Any] | None = None
    written: Any = None
    """What the dataset writer kept of this partition for its `finish`."""
    seconds: float = 0.0


def partition_records(
    ctx: PlanContext, partition: int, shards: Sequence[int], result: ReduceResult, ledger: RowSink,
    entries: Iterable[tuple[int, Record, Any]] | None = None,
) -> tuple[list[Record], list[Record]]:
    """(kept, dropped) records of the partition, each record's fate the earliest drop the chain gives it. The
    records are `entries` (handle, record, pending drop) in handle order when given, else the part spills of
    `shards`; they are read as `StoredRecord`s, which the reduce's steps read like records."""
    decisions = {handle: (position, drop) for handle, position, drop in read_values(ctx.layout.decisions(partition))}
    steps = ctx.settings.steps
    kept: list[Record] = []
    dropped: list[Record] = []
    streams = [entries] if entries is not None else [
        read_part(ctx.layout.part(partition, s)) for s in shards
    ]
    read = 0
    for stream in streams:
        for handle, record, pending in stream:
            read += 1
            decided = decisions.get(handle)
            if decided is None and pending is None:  # most records: kept
                kept.append(record)
                continue
            if decided is not None and decided[0] == REPEATED_ID:
                # Quarantined as a row, not as the record: the id stays with the first row that carried it.
                ledger.quarantine(QuarantineRow(
                    PARSE_STEP, Reason.duplicate, decided[1].errors, record.id, record.origin, record.to_json()
                ))
                result.repeated_ids += 1
                continue
            fate = pending
            if decided is not None and (fate is None or decided[0] < fate[0]):
                fate = decided
            if fate is None:
                kept.append(record)
                continue
            position, drop = fate
            ledger.drop(steps[position].name, record, drop)
            tally(result.chain_drops, position, drop.reason.value)
            dropped.append(record)
    result.records += read
    sort_in_order(kept)
    return kept, dropped


RECORD_OVERHEAD_BYTES = 2048
"""A parsed record's size beyond its text (fields, metadata, the pydantic object), for the group-size check."""


def check_group_sizes(groups: Sequence[Group], worker_budget: int, partition_bound: float | None = None) -> None:
    """A group is reduced whole in one worker: one larger than a worker's memory budget stops the run with an
    error naming it, before the task multiplies it into examples (never an OOM kill halfway through).
    `partition_bound`: an upper bound of the whole partition's estimate, when the caller has one; a partition within
    the budget holds no group beyond it, and its groups need no look each (~0.3 µs a record)."""
    if partition_bound is not None and partition_bound <= worker_budget:
        return
    for group in groups:
        members = [*group.records, *group.dropped]
        estimate = sum(len(r.text or "") for r in members) * MEMORY_PER_INPUT_BYTE + RECORD_OVERHEAD_BYTES * len(members)
        if estimate > worker_budget:
            raise DistillError(
                f"group {display_key(group.key)!r} holds {len(members)} records (~{estimate / 2**20:.0f} MiB in "
                f"memory), more than one worker's share of executor.memory_gb ({worker_budget / 2**20:.0f} MiB): "
                "raise executor.memory_gb, lower executor.workers, or group by a finer key"
            )


SLICE_RECORDS = 4096
"""About how many records a partition reduces at a time (whole groups, in group order). Each pass of the reduce
(task, schema check, lines, stats, quarantine rows) walks a slice that fits in the CPU's caches, instead of the
whole partition's records, which are scattered over its heap (bench/RESULTS.md: "Reducing in slices")."""


def group_slices(groups: Sequence[Group], records: int) -> Iterator[list[Group]]:
    """Consecutive groups holding about `records` records, kept and dropped (a group is never cut); at least one
    slice, empty when there are no groups, so every side gets its (empty) figures."""
    taken: list[Group] = []
    count = 0
    for group in groups:
        taken.append(group)
        count += len(group.records) + len(group.dropped)
        if count >= records:
            yield taken
            taken, count = [], 0
    if taken or not groups:
        yield taken


class EncodedLedger:
    """A partition's ledger, each row encoded as its quarantine spill holds it (`quarantine_entry`) the moment the
    row is made: while its record is still in the CPU's cache, and without holding every row as objects until the
    partition ends. Beside the bytes it keeps what `close_accounts` needs."""

    def __init__(self, steps: Any) -> None:
        self.steps = steps
        self.redacting = redacts_rows(steps)
        self.entries: list[QuarantineEntry] = []
        self.record_ids: list[str] = []

    def quarantine(self, row: QuarantineRow) -> None:
        self.entries.append(quarantine_entry(self.steps, row, self.redacting))
        if isinstance(row.record, RECORD_CLASSES):
            self.record_ids.append(row.record_id)  # type: ignore[arg-type]

    def drop(self, step: str, record: Record, drop: Drop) -> None:
        if self.redacting:
            self.quarantine(QuarantineRow.of(step, record, drop))
            return
        # The row's bytes from its parts: a QuarantineRow (a frozen dataclass, ~1 µs to build) is only needed where a
        # step redacts rows. A quarter of the bench's records leave here.
        row = row_json(step, drop.reason, drop.errors, record.id, record.origin, record, drop.detail, encoded=True)
        self.entries.append(spill_entry(place_key(record.origin, record.id), row))
        self.record_ids.append(record.id)

    def close(self, input_rows: int, exported_ids: set[str]) -> dict[str, int]:
        """`Ledger.close` over the rows encoded so far: the accounting rule, or an `AccountingError`."""
        return close_accounts(input_rows, self.record_ids, len(self.entries), exported_ids)

    def sorted_entries(self) -> list[QuarantineEntry]:
        """The rows in the quarantine file's order, as its spill holds them."""
        return sorted(self.entries, key=BY_PLACE)


def add_side(
    result: ReduceResult, side: str, examples: Sequence[Example], groups: int, token_counter: TokenCounter | None
) -> None:
    """One slice's share of a side: its examples and groups counted, its figures added to the side's."""
    side_result = result.sides.setdefault(side, SideResult(examples=0, groups=0, stats=StatsPart()))
    side_result.examples += len(examples)
    side_result.groups += groups
    side_result.stats.add(stats_part(examples, token_counter))


def reduce_partition(
    ctx: PlanContext, partition: int, shards: Sequence[int], writer: DatasetWriter,
    entries: Iterable[tuple[int, Record, Any]] | None = None,
) -> ReduceResult:
    """Reduces one partition: its records are `entries` in handle order when the executor hands them over (the ray
    executor's shuffle), else those the map left in the part spills of `shards`, removed once the partition is done.
    The partition's groups go through the split, the task and the writer a slice at a time (`group_slices`)."""
    started = time.perf_counter()
    settings = ctx.settings
    result = ReduceResult(partition)
    ledger = EncodedLedger(settings.steps)
    spilled = None if entries is not None else plain_spill_bytes([ctx.layout.part(partition, s) for s in shards])
    kept, dropped = partition_records(ctx, partition, shards, result, ledger, entries)
    groups = group_records(kept, dropped, settings.group_key)
    del kept, dropped
    # Uncompressed part spills hold every text's UTF-8 bytes, at least one byte per character the check counts.
    bound = None if spilled is None else spilled * MEMORY_PER_INPUT_BYTE + RECORD_OVERHEAD_BYTES * result.records
    check_group_sizes(groups, settings.executor.memory_bytes // max(settings.executor.workers, 1), bound)
    output = None if settings.dry_run else writer.open_partition(partition, frame_bytes=ctx.merge_frame_bytes)
    exported: set[str] = set()
    dated: list[Any] = []
    # Slices are taken off the list as they are reduced: a slice's records are freed with it, and the lines and rows
    # the next slices make reuse their memory instead of growing the heap (a worker's first partition pays for
    # every page it grows by).
    slices = list(group_slices(groups, SLICE_RECORDS))[::-1]
    del groups
    flavour = settings.flavour_output
    while slices:
        taken = slices.pop()
        sides = assign_sides(taken, settings.split, settings.split_key)
        built = build_examples(settings.task, sides, ledger, flavour)
        del taken
        exported.update(built.exported)
        times = [r.created_at for r in built.exported.values() if r.created_at is not None]
        if times:
            first, last = min(times), max(times)
            dated = [first, last] if not dated else [min(dated[0], first), max(dated[1], last)]
        for step, reasons in built.drops_by_step.items():
            result.task_drops.setdefault(step, Counter()).update(reasons)
        result.task_counts.update(built.counts)
        for side in built.examples_by_side:
            add_side(result, side, built.examples_by_side[side], len(sides[side]), settings.token_counter)
        if output is not None:
            output.add(built.examples_by_side, built.rendered_by_side)
        del sides, built
    counts = ledger.close(result.records, exported)
    result.exported, result.quarantined = counts["exported_records"], counts["quarantined_rows"]
    result.created_at = (dated[0], dated[1]) if dated else None
    if output is not None:
        result.written = output.close()
    for side, side_result in result.sides.items():
        side_result.stats.spill(ctx.layout.stats_values(side, partition))
    write_line_spill(
        ctx.layout.reduce_quarantine(partition), ledger.sorted_entries(),
        compress=ctx.compress, frame_bytes=ctx.quarantine_frame_bytes,
    )
    result.seconds = time.perf_counter() - started
    write_marker(ctx.layout.reduce_done(partition), result)
    # Only once the marker says this partition is done: a resumed run never needs these records again.
    for shard in shards:
        ctx.layout.part(partition, shard).unlink(missing_ok=True)
    return result

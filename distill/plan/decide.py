"""Decide, over keys only: the repeated-id check of the parse stage, then each global step's `decide` in chain
order, with the records dropped by earlier decisions removed from its input, so the result equals running the
chain in sequence. Keys are ordered by (created_at, id) before a step sees them: survivors ("the first by
(created_at, id)") never depend on shard order.

What is held: per record a 64-bit id hash for the id check (the ids themselves only for hash collisions), then one
global step's keys at a time. When a step's keys would not fit the memory budget, they are decided in buckets, like
the Ray executor does it across tasks: first split by record partition (so a group's keys stay together), then by
the bucket that decides them (`bucket_of`: equal keys always meet in one bucket, so the survivors are those of one
global pass); one at a time, or two at a time where the executor lends a process beside the decide. near_dedup and
semantic_dedup compare every unit with every other: when
their keys would not fit the budget, they build their units one partition bucket at a time and leave the
signatures or embeddings on disk (`distill.plan.decide_units`), and their decisions hold fixed-width numbers per
unit. Decisions go to one spill per partition, so each reduce task reads only its own.
"""

from __future__ import annotations

import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distill.curation.steps.base import GlobalStep, concat_keys, take_keys
from distill.curation.steps.decontaminate import Decontaminate
from distill.curation.steps.exact_dedup import Conversations, ExactDedup
from distill.curation.steps.near_dedup import NearDedup
from distill.curation.steps.semantic_dedup import SemanticDedup
from distill.plan.context import PlanContext
from distill.plan.decide_units import UnitsOnDisk
from distill.plan.ordering import in_order
from distill.plan.prepare import WORKER_BUDGET_SHARE
from distill.plan.spill import SpillWriter, read_batches, read_values, write_spill
from distill.errors import DistillError
from distill.quarantine import Drop
from distill.reasons import Reason

log = logging.getLogger(__name__)

REPEATED_ID = -1
"""The chain position recorded for a row whose id an earlier row already carried (a parse-stage decision)."""
DECIDE_BYTES_PER_KEY = 500
"""Measured (bench/RESULTS.md): the decide process peaked at 498 MiB for 1e6 exact_dedup keys decided whole, and at
994 MiB for 1e7 records in 5 buckets of 2e6 keys (group scope: ids and group keys as Python strings, the sort and
the repeated-id check's 16 bytes per record included)."""
SUMMED_FIGURES = ("hits", "records_without_embedding")
"""Figures a step counts per record (decontaminate's hits): summed over the buckets that decided them."""
FIRST_HITS = "first_hits"
"""decontaminate's first hit per eval set: across buckets, the earliest by (created_at, id)."""


@dataclass
class Decisions:
    repeated_ids: int = 0
    dropped: dict[int, int] = field(default_factory=dict)
    """Chain position -> records dropped there by the global step's decision."""
    held: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Step name -> (keys, bytes per record its decide held): logged by the driver, for bench/."""
    buckets: int = 1
    """How many buckets the bucketable steps were decided in (1: every step over all its keys at once)."""
    beside: dict[str, int] = field(default_factory=dict)
    """Step name -> how many of its buckets a process beside the decide decided (`decide_in_buckets`)."""
    peak_rss_mib: float = 0.0
    """The peak RSS of the process that decided (when it was a process of its own)."""


def repeated_ids(ctx: PlanContext, shards: Sequence[int]) -> tuple[dict[int, list[tuple[int, int, Drop]]], int]:
    """Rows whose id an earlier row (in read order) already carried: (partition -> [(handle, position, drop)], the
    number of records read). Holds 8 bytes per record (twice, while sorting)."""
    hashes = []
    for shard in shards:
        for frame in read_batches(ctx.layout.ids(shard)):
            for id_hashes, _, _, _, _ in frame:
                hashes.append(id_hashes)
    if not hashes:
        return {}, 0
    ordered = np.sort(np.concatenate(hashes))
    records = len(ordered)
    del hashes
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(repeated) == 0:
        return {}, records
    suspects = set(ordered[np.union1d(repeated, repeated + 1)].tolist())
    del ordered
    # Only ids whose 64-bit hash repeats are compared as text.
    seen: dict[str, list[tuple[int, int, str]]] = {}
    for shard in shards:
        for frame in read_batches(ctx.layout.ids(shard)):
            for id_hashes, id_handles, partitions, ids, labels in frame:
                for i in np.flatnonzero(np.isin(id_hashes, list(suspects))).tolist():
                    seen.setdefault(ids[i], []).append((int(id_handles[i]), int(partitions[i]), labels[i]))
    decided: dict[int, list[tuple[int, int, Drop]]] = {}
    for record_id, rows in seen.items():
        if len(rows) < 2:
            continue
        rows.sort()
        where = rows[0][2]
        drop = Drop(Reason.duplicate, (f"id {record_id!r} already read at {where}",))
        for handle, partition, _ in rows[1:]:
            decided.setdefault(partition, []).append((handle, REPEATED_ID, drop))
    return decided, records


HELD_SAMPLE = 4096


def held_bytes(*columns: Any) -> int:
    """What the decide phase holds for a step's keys: array buffers, and the objects a list points at (sized from
    an evenly spaced sample of `HELD_SAMPLE` items: sizing every id took a third of the decide, 0.35 -> 0.22 s at
    1e5). An object several entries point at (a conversation's group key, `StepContext.group_keys`) is counted
    once in all: each entry counts its share."""
    total = 0
    for column in columns:
        if isinstance(column, np.ndarray):
            total += column.nbytes
        elif is_dataclass(column):
            total += held_bytes(*(getattr(column, f.name) for f in fields(column)))
        elif isinstance(column, list):
            sample = column[:: max(1, len(column) // HELD_SAMPLE)]
            in_sample = Counter(map(id, sample))
            sized = 0.0
            for item in sample:
                if isinstance(item, np.ndarray):
                    sized += item.nbytes
                else:
                    # The references beside the column's own: the sample's, `item`'s and getrefcount's argument.
                    sized += sys.getsizeof(item) / max(1, sys.getrefcount(item) - in_sample[id(item)] - 2)
            total += sys.getsizeof(column) + (int(sized * len(column) / len(sample)) if sample else 0)
    return total


def log_held(decisions: Decisions) -> None:
    for name, (count, per_record) in decisions.held.items():
        log.info("decide %s: %d keys, %.1f bytes per record", name, count, per_record)


def decide_buckets(records: int, ctx: PlanContext, bytes_per_key: int = DECIDE_BYTES_PER_KEY) -> int:
    """How many buckets one global step's keys are decided in: enough that one bucket fits the budget."""
    budget = ctx.settings.executor.memory_bytes * WORKER_BUDGET_SHARE
    return max(1, math.ceil(records * bytes_per_key / budget))


def decided_on_disk(step: GlobalStep) -> bool:
    """near_dedup and semantic_dedup compare every unit (conversation or record) with every other: when their keys
    would not fit the budget whole, their units go to disk a bucket at a time."""
    return isinstance(step, (NearDedup, SemanticDedup))


SPILLED_KEYS_HELD = 3
"""A bucket of semantic_dedup's keys holds up to three times their spilled bytes while its units are built (the
spill's frames, their concatenation, the copy in (created_at, id) order): the bucket count follows the
embeddings' width this way. Measured with 768-wide embeddings at 1e6 records: with 2, the decide process peaked at
1,429 MiB against a 0.9 GB share of the default 1.5 GB budget."""


def on_disk_buckets(ctx: PlanContext, position: int, step: GlobalStep, shards: Sequence[int], records: int) -> int:
    """How many partition buckets a `decided_on_disk` step builds its units in: one bucket's keys fit the budget."""
    if isinstance(step, NearDedup):
        return decide_buckets(records, ctx, step.decide_bytes_per_key())
    spilled = sum(path.stat().st_size for path in (ctx.layout.keys(position, s) for s in shards) if path.exists())
    return decide_buckets(1, ctx, SPILLED_KEYS_HELD * spilled)


def bucket_of(step: GlobalStep, keys: Any, partitions: np.ndarray, buckets: int) -> np.ndarray:
    """Which bucket decides each key: one where every key the step compares it with is decided too. `keys` holds
    whole record partitions (`partitions`: each key's), so a group's keys are all here."""
    if isinstance(step, ExactDedup):
        if step.params.scope == "record":
            return (keys.hashes % np.uint64(buckets)).astype(np.int64)
        conversations = Conversations.of(keys.groups, keys.hashes)
        return (conversations.hashes % np.uint64(buckets)).astype(np.int64)[conversations.group_of]
    if isinstance(step, Decontaminate):
        # A record's verdict depends on no other record.
        return (partitions % buckets).astype(np.int64)
    raise ValueError(f"{step.name}: decided whole, never in buckets")


def bucketable(step: GlobalStep) -> bool:
    """near_dedup and semantic_dedup compare every record with every other: they decide over all their keys."""
    return isinstance(step, (ExactDedup, Decontaminate))


def merge_figures(step: GlobalStep, parts: Sequence[tuple[dict[str, Any], dict[str, Any]] | None]) -> None:
    """The step gets the figures its buckets found, as if it had decided alone (for `manifest_extra`): per-record
    counts summed, each eval set's first hit the earliest by (created_at, id). `parts`: (a bucket's figures, the
    order key of each record its first hits name)."""
    figures = step.figures
    earliest: dict[str, Any] = {}
    for part in parts:
        if part is None:
            continue
        found, order = part
        for key, value in found.items():
            if key == FIRST_HITS:
                for name, hit in value.items():
                    rank = order[hit["record_id"]]
                    if name not in earliest or rank < earliest[name][0]:
                        earliest[name] = (rank, hit)
            elif key not in SUMMED_FIGURES:
                figures[key] = value
            elif isinstance(value, dict):
                total = figures.get(key) or {}
                figures[key] = {name: total.get(name, 0) + value.get(name, 0) for name in {**total, **value}}
            else:
                figures[key] = figures.get(key, 0) + value
    if earliest:
        figures[FIRST_HITS] = dict(sorted((name, hit) for name, (_, hit) in earliest.items()))


def bucket_figures(step: GlobalStep, micros: np.ndarray, keys: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What `merge_figures` needs of one bucket: the step's figures and the order keys of its first hits."""
    named = {hit["record_id"] for hit in step.figures.get(FIRST_HITS, {}).values()}
    order = {record_id: (int(micros[i]), record_id) for i, record_id in enumerate(keys.ids) if record_id in named}
    return dict(step.figures), order


def decide_keys(
    step: GlobalStep, position: int, handles: np.ndarray, partitions: np.ndarray, keys: Any, decided: DecisionSink
) -> list[int]:
    """The step's own `decide` over these keys, already in (created_at, id) order (`loaded_in_order`); sends its
    drops to `decided` and returns the handles it dropped."""
    return sent(step.decide([keys]), keys.ids, handles, partitions, position, decided)


def sent(
    drops: dict[str, Drop], names: Sequence[str], handles: np.ndarray, partitions: np.ndarray, position: int,
    decided: PartitionDecisions,
) -> list[int]:
    """Each record whose name (its id, or its group key) `drops` holds goes to `decided` with that drop; returns
    their handles. The names are looked up in one pass in C and only the drops' rows are read from the arrays: a
    loop over every name in Python took 27% of a 3e6 decide whose corpus repeats itself (bench/RESULTS.md)."""
    found = list(map(drops.get, names))
    hits = [i for i, drop in enumerate(found) if drop is not None]
    if not hits:
        return []
    index = np.asarray(hits, dtype=np.int64)
    newly = handles[index].tolist()
    for partition, handle, i in zip(partitions[index].tolist(), newly, hits):
        decided.add(partition, (handle, position, found[i]))
    return newly


class DecisionSink:
    """Each partition's decisions, streamed to its spill as they are made (a run with many drops never holds them
    all): small per-partition buffers, the spill opened on its partition's first decision. `folder`: spills of its
    own there, for a process beside the decide (`decide_bucket_beside`), which the decide's sink then takes in
    (`absorb`)."""

    BUFFERED = 256

    def __init__(self, ctx: PlanContext, folder: Path | None = None) -> None:
        self.ctx = ctx
        self.path_of = ctx.layout.decisions if folder is None else (lambda partition: folder / f"{partition}.spill")
        self.writers: dict[int, SpillWriter] = {}
        self.buffers: dict[int, list[tuple[int, int, Drop]]] = {}

    def add(self, partition: int, decision: tuple[int, int, Drop]) -> None:
        buffer = self.buffers.setdefault(partition, [])
        buffer.append(decision)
        if len(buffer) >= self.BUFFERED:
            self.flush(partition)

    def flush(self, partition: int) -> None:
        buffer = self.buffers.pop(partition, None)
        if not buffer:
            return
        self.writer(partition).write(buffer)

    def writer(self, partition: int) -> SpillWriter:
        writer = self.writers.get(partition)
        if writer is None:
            writer = self.writers[partition] = SpillWriter(self.path_of(partition), compress=self.ctx.compress)
        return writer

    def written(self) -> dict[int, Path]:
        """Closes the spills of the partitions that had decisions; returns them by partition (a sink beside the
        decide: its partitions without decisions get no spill)."""
        for partition in list(self.buffers):
            self.flush(partition)
        spills = {}
        for partition, writer in sorted(self.writers.items()):
            writer.close()
            spills[partition] = writer.path
        self.writers = {}
        return spills

    def absorb(self, spills: dict[int, Path]) -> None:
        """Appends the decisions another sink wrote (`written`) to this one's spills, frame by frame as they are,
        after this sink's own so far; removes them."""
        for partition, path in spills.items():
            self.flush(partition)
            self.writer(partition).append_frames(path)
            path.unlink()

    def close(self) -> None:
        """Every partition's spill under its final name (an empty one for a partition without decisions)."""
        for partition in list(self.buffers):
            self.flush(partition)
        for partition in range(self.ctx.partitions):
            writer = self.writers.pop(partition, None)
            if writer is None:
                write_spill(self.ctx.layout.decisions(partition), [[]], compress=self.ctx.compress)
            else:
                writer.close()

    def abandon(self) -> None:
        for writer in self.writers.values():
            writer.abandon()


def scatter(frames: Any, writers: list[SpillWriter], where: Any) -> None:
    """Each frame's (handles, partitions, micros, keys) rows to the writer `where` picks for each row; then every
    writer's spill under its final name (every one abandoned if the scatter fails)."""
    try:
        for handles, partitions, micros, keys in frames:
            chosen = where(handles, partitions, micros, keys)
            for target in np.unique(chosen).tolist():
                index = np.flatnonzero(chosen == target)
                writers[target].write([(handles[index], partitions[index], micros[index], take_keys(keys, index))])
    except BaseException:
        for writer in writers:
            writer.abandon()
        raise
    for writer in writers:
        writer.close()


def loaded(paths: Iterable[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any] | None:
    """The (handles, partitions, micros, keys) rows of these key spills, concatenated; None when they hold none."""
    frames = [entry for path in paths for frame in read_batches(path) for entry in frame]
    if not frames:
        return None
    return (
        np.concatenate([f[0] for f in frames]), np.concatenate([f[1] for f in frames]),
        np.concatenate([f[2] for f in frames]), concat_keys([f[3] for f in frames]),
    )


def loaded_in_order(
    paths: Iterable[Path], masked: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any] | None:
    """`loaded`, without the records in `masked` (dropped by earlier decisions), in (created_at, id) order: one
    copy of the keys while the spills' own is released, so a step's decide never holds its keys three times
    (near_dedup's signatures are 512 bytes per record)."""
    found = loaded(paths)
    if found is None:
        return None
    handles, partitions, micros, keys = found
    del found
    alive = np.flatnonzero(~np.isin(handles, masked)) if masked is not None and len(masked) else None
    order = in_order(micros, keys.ids, alive)
    if alive is None and np.array_equal(order, np.arange(len(order))):
        return handles, partitions, micros, keys
    return handles[order], partitions[order], micros[order], take_keys(keys, order)


def by_partition(
    ctx: PlanContext, position: int, shards: Sequence[int], masked: np.ndarray, buckets: int, tag: str = ""
) -> list[Path]:
    """The step's keys split into `buckets` spills by record partition (a group's keys all in one), without the
    records earlier decisions dropped. `tag`: in the spills' names, for a process beside the decide that splits
    other shards' keys at the same time."""
    scratch = ctx.layout.decide_scratch(position)
    scratch.mkdir(parents=True, exist_ok=True)
    paths = [scratch / f"partition-{b}{tag}.spill" for b in range(buckets)]
    writers = [SpillWriter(path, compress=ctx.compress) for path in paths]
    frames = (entry for shard in shards for frame in read_batches(ctx.layout.keys(position, shard)) for entry in frame)
    alive_frames = (
        (h[alive], p[alive], m[alive], take_keys(k, alive))
        for h, p, m, k in frames
        for alive in [np.flatnonzero(~np.isin(h, masked))]
        if len(alive)
    )
    scatter(alive_frames, writers, lambda h, p, m, k: p % buckets)
    return paths


def units_of(step: NearDedup | SemanticDedup, keys: Any, micros: np.ndarray) -> tuple[Any, ...]:
    """What `UnitsOnDisk.add` takes of one bucket's keys (in (created_at, id) order): near_dedup's units
    (conversations or records) with their signatures and best rewards, or semantic_dedup's records and embeddings;
    then each key's unit (its index among them)."""
    if isinstance(step, NearDedup):
        made = step.units(keys)
        first_ids = [keys.ids[i] for i in made.first.tolist()]
        return made.signatures, made.names, made.last, micros[made.first], first_ids, made.rewards, made.member_of
    return keys.vectors, keys.ids, keys.ids, micros, keys.ids, None, np.arange(len(keys.ids))


def near_drops_sent(
    step: NearDedup, units: UnitsOnDisk, members: list[Path], position: int, decided: DecisionSink
) -> list[int]:
    """near_dedup's decision over every bucket's units, its drops made and sent one bucket at a time from the
    survivors and similarities (8 bytes each per unit): with many near copies, a dict of every drop would hold
    ~0.5 KB per drop. Only the survivors' names are held. Returns the handles dropped."""
    units.index_bands(step.band_keys)
    survivor, similarity = step.clustered(units, units.values, units)
    moved = survivor != np.arange(len(survivor))
    kept_as = units.named(np.unique(survivor[moved]))
    newly: list[int] = []
    for bucket, path in enumerate(members):
        for handles, partitions, _, member_of in read_values(path):
            unit_of = units.numbers[bucket][member_of]
            made: dict[int, Drop] = {}  # one drop per unit, shared by a conversation's records
            for i in np.flatnonzero(moved[unit_of]).tolist():
                unit = int(unit_of[i])
                drop = made.get(unit)
                if drop is None:
                    drop = made[unit] = step.drop(kept_as[int(survivor[unit])][0], float(similarity[unit]))
                decided.add(int(partitions[i]), (int(handles[i]), position, drop))
                newly.append(int(handles[i]))
    return newly


class PartitionDecisions(Protocol):
    """Where decisions go, by the partition whose reduce applies them (`DecisionSink`; a Ray task's lists)."""

    def add(self, partition: int, decision: tuple[int, int, Drop]) -> None: ...


Keys = tuple[np.ndarray, np.ndarray, np.ndarray, Any]
"""(handles, partitions, micros, keys) of one bucket of a step's keys, in (created_at, id) order."""


def decided_via_disk(
    step: NearDedup | SemanticDedup, position: int, buckets: Iterable[Keys], scratch: Path, *, compress: bool,
    decided: PartitionDecisions,
) -> tuple[int, int, list[int]]:
    """The step's decision over `buckets` (consumed one at a time), their units on disk under `scratch`
    (`UnitsOnDisk`), the decision holding fixed-width numbers per unit; its drops go to `decided`. A second pass
    finds the records of the units it drops from what the first kept of each key: its handle, its partition, its
    unit's name and its unit (re-reading the keys would load every signature or embedding again). Returns
    (records, bytes held, the handles dropped)."""
    by_group = isinstance(step, NearDedup) and step.params.scope == "group"
    units = UnitsOnDisk(scratch, compress=compress)
    members: list[Path] = []  # per bucket added: each key's handle, partition, unit name and unit
    records = 0
    try:
        for handles, partitions, micros, keys in buckets:
            if not keys.ids:
                continue
            rows, *described, member_of = units_of(step, keys, micros)
            if units.width and rows.shape[1] != units.width:
                raise DistillError(f"curation.steps.{step.name}: embeddings of different lengths")
            members.append(scratch / f"members-{len(members)}.spill")
            names = keys.groups if by_group else keys.ids
            write_spill(members[-1], [[(handles, partitions, names, member_of)]], compress=compress)
            records += len(keys.ids)
            units.add(rows, *described)
            del handles, partitions, keys, micros, rows, described, member_of, names
        if not records:
            return 0, 0, []
        units.number()
        if isinstance(step, NearDedup):
            return records, units.held_bytes(), near_drops_sent(step, units, members, position, decided)
        unit_drops = step.decide_embeddings(units)
        newly: list[int] = []
        for path in members:
            for handles, partitions, names, _ in read_values(path):
                newly.extend(sent(unit_drops, names, handles, partitions, position, decided))
        return records, units.held_bytes(), newly
    finally:
        units.remove()
        for path in members:
            path.unlink(missing_ok=True)


def decide_on_disk(
    ctx: PlanContext, position: int, step: NearDedup | SemanticDedup, shards: Sequence[int], masked: np.ndarray,
    buckets: int, decided: DecisionSink, result: Decisions,
) -> list[int]:
    """A step that compares every unit with every other, one partition bucket at a time (`decided_via_disk`): each
    bucket holds whole conversations (a group never spans partitions), or any records."""
    scratch = ctx.layout.decide_scratch(position)
    if (isinstance(step, NearDedup) and step.params.scope == "group") or len(shards) < buckets:
        # A conversation's keys may come from any shard: they are brought together by partition first.
        scattered = by_partition(ctx, position, shards, masked, buckets)
        sources = [[path] for path in scattered]
    else:
        # A record is its own unit: each bucket reads a run of shards' key spills as they are, no copy.
        scattered = []
        runs = np.array_split(np.asarray(shards, dtype=np.int64), buckets)
        sources = [[ctx.layout.keys(position, shard) for shard in run.tolist()] for run in runs]
        scratch.mkdir(parents=True, exist_ok=True)

    def loaded_buckets() -> Iterator[Keys]:
        for source in sources:
            found = loaded_in_order(source, masked)
            if scattered:
                source[0].unlink(missing_ok=True)
            if found is not None:
                yield found
            del found  # before the next bucket loads

    records, held, newly = decided_via_disk(
        step, position, loaded_buckets(), scratch, compress=ctx.compress, decided=decided
    )
    if not records:
        step.decide([])
        return []
    result.held[step.name] = (records, held / records)
    return newly


BucketHelper = Callable[[], AbstractContextManager[Callable[..., Future[Any]]]]
"""What the executor hands the decide to share a decide in buckets with a process beside it (`decide_in_buckets`):
a context manager giving `submit(function, *args)`, which queues `function(ctx, *args)` on that process."""


def decide_in_buckets(
    ctx: PlanContext, position: int, step: GlobalStep, shards: Sequence[int], masked: np.ndarray, buckets: int,
    decided: DecisionSink, result: Decisions, beside: BucketHelper | None = None,
) -> list[int]:
    """The step decided a bucket at a time, through two scatters on disk: by record partition (records earlier
    decisions dropped left out), then by `bucket_of`. Holds one bucket's keys at a time; with `beside` (the local
    executor's other workers idle while it decides), every other bucket is decided in a process of its own at the
    same time, each holding half of what one bucket would (`decide`), and half of each scatter is done there too
    (`scatter_into_buckets`): at 3e6 bench records the decide took 9.2 s (in a slower hour) instead of 13.0, and its
    process peaked at 391-520 MiB instead of 861 (bench/RESULTS.md)."""
    scratch = ctx.layout.decide_scratch(position)
    newly: list[int] = []
    figures = []
    base = dict(step.figures)  # what setup() found (e.g. the eval sets' sizes): every bucket starts from it

    def taken(got: BucketDecided | None) -> None:
        if got is None:
            return
        count, most = result.held.get(step.name, (0, 0.0))
        result.held[step.name] = (count + got.keys, max(most, got.held_per_key))
        newly.extend(got.dropped)
        figures.append(got.figures)

    shared = beside is not None and isinstance(step, ExactDedup)  # decontaminate's eval-set index is this process's
    # The process beside starts (its fork server imports distill, ~0.7 s) while this one scatters the keys.
    with beside() if shared else nullcontext() as submit:  # type: ignore[misc]
        tags = scatter_into_buckets(ctx, position, shards, masked, buckets, submit)

        def spills(bucket: int) -> list[Path]:
            return [scratch / f"bucket-{bucket}{tag}.spill" for tag in tags]

        for first in range(0, buckets, 2):
            pair = [b for b in (first, first + 1) if b < buckets]
            apart = None
            if submit is not None and len(pair) == 2:
                out = scratch / f"decided-{pair[1]}"
                apart = submit(decide_bucket_beside, position, spills(pair[1]), base, out)
                result.beside[step.name] = result.beside.get(step.name, 0) + 1
                pair = pair[:1]
            for b in pair:
                step.figures = dict(base)
                taken(decide_bucket(step, position, spills(b), decided))
            if apart is not None:
                got = apart.result()
                if got is not None:
                    decided.absorb(got.spills)
                taken(got)
    step.figures = dict(base)
    step.decide([])  # the figures of a step that saw no keys, which the buckets' figures then fill in
    merge_figures(step, figures)
    return newly


TAGS = ("", ".beside")
"""The names' tags of the spills this process and the one beside it scatter into (`scatter_into_buckets`)."""


def scatter_into_buckets(
    ctx: PlanContext, position: int, shards: Sequence[int], masked: np.ndarray, buckets: int,
    submit: Callable[..., Future[Any]] | None = None,
) -> list[str]:
    """The step's keys (records earlier decisions dropped left out) into `decide_in_buckets`' bucket spills: first by
    record partition, so a group's keys meet, then by `bucket_of`. With `submit` (the process beside the decide),
    each pass is split between the two: half of the shards' keys, then half of the partition buckets. Returns the
    tags of the spills each bucket's keys are in (`TAGS`)."""
    if submit is None:
        by_partition(ctx, position, shards, masked, buckets)
        into_buckets(ctx, position, range(buckets), buckets)
        return [""]
    half = len(shards) // 2
    beside = submit(by_partition, position, list(shards[half:]), masked, buckets, TAGS[1])
    by_partition(ctx, position, shards[:half], masked, buckets)
    beside.result()
    beside = submit(into_buckets, position, range(1, buckets, 2), buckets, TAGS[1])
    into_buckets(ctx, position, range(0, buckets, 2), buckets)
    beside.result()
    return list(TAGS)


def into_buckets(
    ctx: PlanContext, position: int, partition_buckets: Iterable[int], buckets: int, tag: str = ""
) -> None:
    """The keys of these partition buckets (`by_partition`'s spills, whatever their tag) to the bucket spills that
    decide them (`bucket_of`), named with `tag`; removes the partition buckets' spills."""
    step = ctx.settings.steps[position]
    assert isinstance(step, GlobalStep)
    scratch = ctx.layout.decide_scratch(position)

    def partition_buckets_keys() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, Any]]:
        for partition_bucket in partition_buckets:
            paths = [scratch / f"partition-{partition_bucket}{spilled}.spill" for spilled in TAGS]
            found = loaded(paths)
            for path in paths:
                path.unlink(missing_ok=True)
            if found is not None:
                yield found

    by_bucket = [SpillWriter(scratch / f"bucket-{b}{tag}.spill", compress=ctx.compress) for b in range(buckets)]
    scatter(partition_buckets_keys(), by_bucket, lambda h, p, m, k: bucket_of(step, k, p, buckets))


@dataclass
class BucketDecided:
    """One bucket's decision (`decide_bucket`): the handles its step dropped, its figures for `merge_figures`, its
    keys and the bytes it held per key; from a process beside the decide, also the spills its decisions are in."""

    dropped: list[int]
    figures: tuple[dict[str, Any], dict[str, Any]]
    keys: int
    held_per_key: float
    spills: dict[int, Path] = field(default_factory=dict)


def decide_bucket(
    step: GlobalStep, position: int, paths: Sequence[Path], decided: PartitionDecisions
) -> BucketDecided | None:
    """The step's decide over one bucket's keys (`decide_in_buckets`: in one spill, or one from each process that
    scattered them), loaded in (created_at, id) order; its drops go to `decided`. The spills are removed once
    loaded. None for a bucket without keys."""
    found = loaded_in_order(paths)
    for path in paths:
        path.unlink(missing_ok=True)
    if found is None:
        return None
    keys_held, held = len(found[3].ids), held_bytes(*found) / max(len(found[3].ids), 1)
    handles, partitions, micros, keys = found
    del found
    dropped = decide_keys(step, position, handles, partitions, keys, decided)
    return BucketDecided(dropped, bucket_figures(step, micros, keys), keys_held, held)


def decide_bucket_beside(
    ctx: PlanContext, position: int, paths: Sequence[Path], base: dict[str, Any], folder: Path
) -> BucketDecided | None:
    """`decide_bucket` in a process beside the decide: the step starts from the figures `base` holds, and its
    drops go to spills of their own in `folder`, which the decide then takes in (`DecisionSink.absorb`)."""
    step = ctx.settings.steps[position]
    assert isinstance(step, GlobalStep)
    step.figures = dict(base)
    folder.mkdir(parents=True, exist_ok=True)
    sink = DecisionSink(ctx, folder)
    try:
        got = decide_bucket(step, position, paths, sink)
        spills = sink.written()
    except BaseException:
        sink.abandon()
        raise
    if got is not None:
        got.spills = spills
    return got


def decide(ctx: PlanContext, shards: Sequence[int], beside: BucketHelper | None = None) -> Decisions:
    """Writes each partition's decisions ([(handle, chain position, drop)]) and returns the counts. `beside`: a
    process that may decide every other bucket at the same time (`decide_in_buckets`); the buckets are then twice
    as many, so that the two held at once hold what one did."""
    repeated, records = repeated_ids(ctx, shards)
    result = Decisions(repeated_ids=sum(len(rows) for rows in repeated.values()))
    masked = np.array(sorted(handle for rows in repeated.values() for handle, _, _ in rows), dtype=np.uint64)
    buckets = decide_buckets(records, ctx)
    if buckets > 1 and beside is not None:
        buckets = decide_buckets(records, ctx, 2 * DECIDE_BYTES_PER_KEY)
    decided = DecisionSink(ctx)
    try:
        for partition, rows in repeated.items():
            for row in rows:
                decided.add(partition, row)
        del repeated
        steps = ctx.settings.steps
        global_steps = [(position, step) for position, step in enumerate(steps) if isinstance(step, GlobalStep)]
        for position, step in global_steps:
            unit_buckets = on_disk_buckets(ctx, position, step, shards, records) if decided_on_disk(step) else 1
            if unit_buckets > 1:
                # Keys that fit the budget whole are decided in memory (below): writing them to disk costs time.
                unit = "conversation" if isinstance(step, NearDedup) and step.params.scope == "group" else "record"
                log.info("decide %s: by %s, in %d buckets", step.name, unit, unit_buckets)
                newly = decide_on_disk(ctx, position, step, shards, masked, unit_buckets, decided, result)
            elif buckets > 1 and bucketable(step):
                log.info("decide %s: in %d buckets", step.name, buckets)
                newly = decide_in_buckets(ctx, position, step, shards, masked, buckets, decided, result, beside)
            else:
                newly = decide_whole(ctx, position, step, shards, masked, decided, result)
            result.dropped[position] = len(newly)
            if newly and position != global_steps[-1][0]:
                # Only a later global step's keys are masked with them: after the last, the union (a sort of every
                # handle dropped so far) would be work for nothing, 1.8 of a 3e6 decide's 16.6 s (bench/RESULTS.md).
                masked = np.union1d(masked, np.array(newly, dtype=np.uint64))
            del newly
        decided.close()
    except BaseException:
        decided.abandon()
        raise
    result.buckets = buckets
    return result


def decide_whole(
    ctx: PlanContext, position: int, step: GlobalStep, shards: Sequence[int], masked: np.ndarray,
    decided: DecisionSink, result: Decisions,
) -> list[int]:
    """The step decided over all its keys at once."""
    found = loaded_in_order((ctx.layout.keys(position, shard) for shard in shards), masked)
    if found is None:
        step.decide([])
        return []
    handles, partitions, _, keys = found
    del found
    result.held[step.name] = (len(keys.ids), held_bytes(handles, partitions, keys) / max(len(keys.ids), 1))
    return decide_keys(step, position, handles, partitions, keys, decided)

"""Decide, over keys only: the repeated-id check of the parse stage, then each global step's `decide` in chain
order, with the records dropped by earlier decisions removed from its input, so the result equals running the
chain in sequence. Keys are ordered by (created_at, id) before a step sees them: survivors ("the first by
(created_at, id)") never depend on shard order.

What is held: per record a 64-bit id hash, a 64-bit handle and a partition number for the id check (the ids
themselves only for hash collisions), then one global step's keys at a time. Decisions go to one spill per
partition, so each reduce task reads only its own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from distill.curation.steps.base import GlobalStep, concat_keys, take_keys
from distill.plan.context import PlanContext
from distill.plan.spill import read_batches, write_spill
from distill.quarantine import Drop
from distill.reasons import Reason

log = logging.getLogger(__name__)

REPEATED_ID = -1
"""The chain position recorded for a row whose id an earlier row already carried (a parse-stage decision)."""


@dataclass
class Decisions:
    repeated_ids: int = 0
    dropped: dict[int, int] = field(default_factory=dict)
    """Chain position -> records dropped there by the global step's decision."""


def repeated_ids(ctx: PlanContext, shards: Sequence[int]) -> dict[int, list[tuple[int, int, Drop]]]:
    """Rows whose id an earlier row (in read order) already carried: partition -> [(handle, position, drop)]."""
    hashes, handles = [], []
    for shard in shards:
        for frame in read_batches(ctx.layout.ids(shard)):
            for id_hashes, id_handles, _, _, _ in frame:
                hashes.append(id_hashes)
                handles.append(id_handles)
    if not hashes:
        return {}
    all_hashes = np.concatenate(hashes)
    order = np.argsort(all_hashes, kind="stable")
    ordered = all_hashes[order]
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(repeated) == 0:
        return {}
    suspects = set(ordered[np.union1d(repeated, repeated + 1)].tolist())
    del hashes, handles, all_hashes, order, ordered
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
    return decided


def load_keys(ctx: PlanContext, position: int, shards: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    handles, partitions, micros, keys = [], [], [], []
    for shard in shards:
        for frame in read_batches(ctx.layout.keys(position, shard)):
            for key_handles, key_partitions, key_micros, key_batch in frame:
                handles.append(key_handles)
                partitions.append(key_partitions)
                micros.append(key_micros)
                keys.append(key_batch)
    if not keys:
        return np.empty(0, np.uint64), np.empty(0, np.uint32), np.empty(0, np.int64), None
    return np.concatenate(handles), np.concatenate(partitions), np.concatenate(micros), concat_keys(keys)


def held_bytes(*columns: Any) -> int:
    """What the decide phase holds for a step's keys: array buffers, and the objects a list points at."""
    total = 0
    for column in columns:
        if isinstance(column, np.ndarray):
            total += column.nbytes
        elif is_dataclass(column):
            total += held_bytes(*(getattr(column, f.name) for f in fields(column)))
        elif isinstance(column, list):
            total += sys.getsizeof(column)
            total += sum(item.nbytes if isinstance(item, np.ndarray) else sys.getsizeof(item) for item in column)
    return total


def decide(ctx: PlanContext, shards: Sequence[int]) -> Decisions:
    """Writes each partition's decisions ([(handle, chain position, drop)]) and returns the counts."""
    decided = repeated_ids(ctx, shards)
    result = Decisions(repeated_ids=sum(len(rows) for rows in decided.values()))
    masked = np.array(sorted(handle for rows in decided.values() for handle, _, _ in rows), dtype=np.uint64)
    for position, step in enumerate(ctx.settings.steps):
        if not isinstance(step, GlobalStep):
            continue
        handles, partitions, micros, keys = load_keys(ctx, position, shards)
        if keys is None:
            step.decide([])
            continue
        log.info(
            "decide %s: %d keys, %.1f bytes per record", step.name, len(keys.ids),
            held_bytes(handles, partitions, micros, keys) / max(len(keys.ids), 1),
        )
        alive = np.flatnonzero(~np.isin(handles, masked))
        ids = keys.ids
        order = sorted(alive.tolist(), key=lambda i: (micros[i], ids[i]))
        ordered = take_keys(keys, order)
        drops = step.decide([ordered])
        newly = []
        for i in order:
            drop = drops.get(ids[i])
            if drop is not None:
                decided.setdefault(int(partitions[i]), []).append((int(handles[i]), position, drop))
                newly.append(handles[i])
        result.dropped[position] = len(newly)
        if newly:
            masked = np.union1d(masked, np.array(newly, dtype=np.uint64))
        del handles, partitions, micros, keys, ordered
    for partition in range(ctx.partitions):
        write_spill(ctx.layout.decisions(partition), [decided.get(partition, [])], compress=ctx.compress)
    return result

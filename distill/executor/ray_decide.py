"""Decide, distributed over Ray tasks: the same decisions as `distill.plan.decide`, without the driver ever holding
the keys. The driver holds object references and a few counts per step; every key lives in one task at a time.

- The repeated-id check: (id hash, handle, partition, id) rows hash-partitioned by id; each bucket keeps the first
  row (in read order) of every id and drops the later ones.
- Each global step in chain order: its keys are gathered per record partition (a shuffle on distill's partition
  key), the records an earlier decision dropped are masked out there, and what is left is ordered by
  (created_at, id). Then by step:
  - `exact_dedup` (scope record): keys hash-partitioned by their content hash; (scope group): each partition holds
    its groups whole, so it computes every conversation's hash, and conversations are hash-partitioned by it. Each
    bucket runs the step's own `decide` over its keys in (created_at, id) order: equal keys always meet in one
    bucket, so the survivors are those of one global pass.
  - `decontaminate`: a record's verdict depends on no other record, so each partition decides its own keys; the
    eval-set index travels once per worker inside the run's context (loaded once by the driver).
  - `near_dedup`: band keys shuffled by band, candidate pairs verified, clusters by a distributed connected-
    components pass (`distill.executor.ray_near_dedup`).
  - `semantic_dedup` (its greedy earliest-first rule is sequential) decides in one task that fetches one
    partition's keys at a time and leaves its embeddings on the node's disk (`UnitsOnDisk`): off the driver and in
    bounded memory, but not spread.
- Each partition's decisions are written by one task to the spill its reduce task reads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray

from distill.curation.steps.base import GlobalStep, concat_keys, take_keys
from distill.curation.steps.near_dedup import NearDedup
from distill.curation.steps.semantic_dedup import SemanticDedup
from distill.executor.ray import get, worker_context
from distill.plan.context import PlanContext
from distill.plan.decide import (
    REPEATED_ID, Decisions, bucket_figures, bucket_of, bucketable, decided_via_disk, in_order, merge_figures, sent,
)
from distill.plan.map import labels_at
from distill.plan.spill import read_batches, write_spill
from distill.quarantine import Drop
from distill.reasons import Reason

def split(outputs: list[Any]) -> Any:
    """A task's outputs as Ray expects them for `num_returns=len(outputs)`."""
    return tuple(outputs) if len(outputs) > 1 else outputs[0]


def refs_of(refs: Any, count: int) -> list[Any]:
    return list(refs) if count > 1 else [refs]


def order_by_created(handles: np.ndarray, micros: np.ndarray, keys: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    order = in_order(micros, keys.ids)
    return handles[order], micros[order], take_keys(keys, order)


# -- the repeated-id check ---------------------------------------------------------------------------------------


@ray.remote
def ids_scatter(token: str, holder: list[Any], shards: list[int], buckets: int) -> Any:
    ctx = worker_context(token, holder)
    out: list[list[Any]] = [[] for _ in range(buckets)]
    for frame in (frame for shard in shards for frame in read_batches(ctx.layout.ids(shard))):
        for id_hashes, handles, partitions, ids, labels in frame:
            where = id_hashes % np.uint64(buckets)
            for bucket in np.unique(where).tolist():
                index = np.flatnonzero(where == bucket)
                out[bucket].append((
                    id_hashes[index], handles[index], partitions[index],
                    [ids[i] for i in index.tolist()], labels_at(labels, index),
                ))
    return split(out)


@ray.remote
def ids_decide(partitions: int, *pieces: list[Any]) -> Any:
    """Rows whose id an earlier row (in read order) already carried, per partition; last output: their count."""
    rows = [row for piece in pieces for row in piece]
    out: list[list[Any]] = [[] for _ in range(partitions)]
    if rows:
        hashes = np.concatenate([row[0] for row in rows])
        ordered = np.sort(hashes)
        suspects = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        seen: dict[str, list[tuple[int, int, str]]] = {}
        for id_hashes, handles, parts, ids, labels in rows:
            for i in np.flatnonzero(np.isin(id_hashes, suspects)).tolist():
                seen.setdefault(ids[i], []).append((int(handles[i]), int(parts[i]), labels[i]))
        for record_id, found in seen.items():
            if len(found) < 2:
                continue
            found.sort()
            drop = Drop(Reason.duplicate, (f"id {record_id!r} already read at {found[0][2]}",))
            for handle, partition, _ in found[1:]:
                out[partition].append((handle, REPEATED_ID, drop))
    return split([*out, sum(len(rows) for rows in out)])


# -- a global step's keys, per partition, then per bucket --------------------------------------------------------


@ray.remote
def keys_scatter(token: str, holder: list[Any], position: int, shards: list[int], partitions: int) -> Any:
    """Some shards' keys of the step at `position`, split by the partition of their record."""
    ctx = worker_context(token, holder)
    out: list[list[Any]] = [[] for _ in range(partitions)]
    for frame in (frame for shard in shards for frame in read_batches(ctx.layout.keys(position, shard))):
        for handles, parts, micros, keys in frame:
            for partition in np.unique(parts).tolist():
                index = np.flatnonzero(parts == partition)
                out[partition].append((handles[index], micros[index], take_keys(keys, index)))
    return split(out)


def alive_keys(pieces: Sequence[list[Any]], decided: Sequence[list[Any]]) -> tuple[np.ndarray, np.ndarray, Any] | None:
    """A partition's keys without the records earlier decisions dropped, in (created_at, id) order."""
    entries = [entry for piece in pieces for entry in piece]
    if not entries:
        return None
    handles = np.concatenate([entry[0] for entry in entries])
    micros = np.concatenate([entry[1] for entry in entries])
    keys = concat_keys([entry[2] for entry in entries])
    masked = np.array([handle for rows in decided for handle, _, _ in rows], dtype=np.uint64)
    alive = np.flatnonzero(~np.isin(handles, masked))
    return order_by_created(handles[alive], micros[alive], take_keys(keys, alive))


@ray.remote
def partition_keys(
    token: str, holder: list[Any], position: int, partition: int, buckets: int, shards: int, *args: list[Any]
) -> Any:
    """The partition's alive keys of the step at `position`, split into the buckets that decide them."""
    ctx = worker_context(token, holder)
    found = alive_keys(args[:shards], args[shards:])
    if found is None:
        return split([None] * buckets)
    handles, micros, keys = found
    step = ctx.settings.steps[position]
    count = len(keys.ids)
    if bucketable(step):
        where = bucket_of(step, keys, np.full(count, partition, dtype=np.uint32), buckets)
    else:
        where = np.zeros(count, dtype=np.int64)  # semantic_dedup: one task over all its keys
    out = []
    for bucket in range(buckets):
        index = np.flatnonzero(where == bucket)
        parts = np.full(len(index), partition, dtype=np.uint32)
        out.append((handles[index], parts, micros[index], take_keys(keys, index)) if len(index) else None)
    return split(out)


@ray.remote
def bucket_decide(token: str, holder: list[Any], position: int, partitions: int, *pieces: Any) -> Any:
    """The step's own `decide` over one bucket's keys in (created_at, id) order; outputs: each partition's
    decisions, then (records dropped, the step's figures)."""
    ctx = worker_context(token, holder)
    decided = PartitionLists(partitions)
    pieces = tuple(piece for piece in pieces if piece is not None)
    if not pieces:
        return split([*decided.rows, (0, None)])
    handles = np.concatenate([piece[0] for piece in pieces])
    parts = np.concatenate([piece[1] for piece in pieces])
    micros = np.concatenate([piece[2] for piece in pieces])
    keys = concat_keys([piece[3] for piece in pieces])
    order = in_order(micros, keys.ids)
    step = ctx.settings.steps[position]
    ordered = take_keys(keys, order)
    dropped = len(sent(step.decide([ordered]), ordered.ids, handles[order], parts[order], position, decided))
    return split([*decided.rows, (dropped, bucket_figures(step, micros, keys))])


class PartitionLists:
    """A task's decisions, one list per partition (`PartitionDecisions`)."""

    def __init__(self, partitions: int) -> None:
        self.rows: list[list[Any]] = [[] for _ in range(partitions)]

    def add(self, partition: int, decision: tuple[int, int, Drop]) -> None:
        self.rows[partition].append(decision)


@ray.remote
def semantic_decide(token: str, holder: list[Any], position: int, partitions: int, pieces: list[Any]) -> Any:
    """semantic_dedup over every partition's keys (`pieces`: one object reference per partition, each in
    (created_at, id) order), fetched one at a time: each partition's embeddings go to disk in a temporary directory
    of this node (`decided_via_disk`), so the task holds fixed-width numbers per record, never every embedding.
    Outputs as `bucket_decide`'s."""
    ctx = worker_context(token, holder)
    step = ctx.settings.steps[position]
    out = PartitionLists(partitions)

    def fetched() -> Any:
        for reference in pieces:
            piece = ray.get(reference)
            if piece is not None:
                yield piece
            del piece  # before the next one is fetched

    with tempfile.TemporaryDirectory(prefix="distill-semantic-") as scratch:
        records, _, newly = decided_via_disk(
            step, position, fetched(), Path(scratch), compress=ctx.compress, decided=out
        )
    figures = (dict(step.figures), {}) if records else None
    return split([*out.rows, (len(newly), figures)])


@ray.remote
def write_decisions(token: str, holder: list[Any], partition: int, *decided: list[Any]) -> None:
    ctx = worker_context(token, holder)
    rows = [row for rows in decided for row in rows]
    write_spill(ctx.layout.decisions(partition), [rows], compress=ctx.compress)


def decide_distributed(
    ctx: PlanContext, shards: list[int], token: str, holder: list[Any], options: dict[str, Any]
) -> Decisions:
    partitions = ctx.partitions
    # Scatter tasks read several shards each and buckets are as many as the cluster's cores can use: the driver
    # holds (readers x partitions) + (partitions x buckets) references per step, not (shards x partitions).
    width = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    readers = [shards[i::width] for i in range(min(width, len(shards)))] or [[]]
    buckets = min(partitions, width)
    decided: list[list[Any]] = [[] for _ in range(partitions)]

    def many(task: Any, count: int) -> Any:
        return task.options(num_returns=count, **options)

    scattered = [refs_of(many(ids_scatter, buckets).remote(token, holder, r, buckets), buckets) for r in readers]
    outs = [
        refs_of(many(ids_decide, partitions + 1).remote(partitions, *[piece[b] for piece in scattered]), partitions + 1)
        for b in range(buckets)
    ]
    for out in outs:
        for partition in range(partitions):
            decided[partition].append(out[partition])
    result = Decisions(repeated_ids=sum(get([out[partitions] for out in outs])))
    del scattered, outs

    for position, step in enumerate(ctx.settings.steps):
        if not isinstance(step, GlobalStep):
            continue
        step.decide([])  # the figures of a step that sees no keys, as the local plan leaves them
        scattered = [
            refs_of(many(keys_scatter, partitions).remote(token, holder, position, r, partitions), partitions)
            for r in readers
        ]
        if isinstance(step, NearDedup):
            from distill.executor.ray_near_dedup import near_dedup_distributed

            per_partition = [
                many(partition_keys, 1).remote(
                    token, holder, position, p, 1, len(readers), *[piece[p] for piece in scattered], *decided[p]
                )
                for p in range(partitions)
            ]
            outs, dropped = near_dedup_distributed(step, position, per_partition, options, token, holder)
            for partition in range(partitions):
                decided[partition].append(outs[partition])
            result.dropped[position] = dropped
            continue
        if isinstance(step, SemanticDedup):
            per_partition = [
                many(partition_keys, 1).remote(
                    token, holder, position, p, 1, len(readers), *[piece[p] for piece in scattered], *decided[p]
                )
                for p in range(partitions)
            ]
            # The references go inside a list, so Ray hands them over unresolved: the task fetches one at a time.
            out = refs_of(
                many(semantic_decide, partitions + 1).remote(token, holder, position, partitions, per_partition),
                partitions + 1,
            )
            for partition in range(partitions):
                decided[partition].append(out[partition])
            dropped, figures = get(out[partitions])
            result.dropped[position] = dropped
            merge_figures(step, [figures])
            del scattered, per_partition, out
            continue
        keyed = [
            refs_of(
                many(partition_keys, buckets).remote(
                    token, holder, position, p, buckets, len(readers), *[piece[p] for piece in scattered], *decided[p]
                ),
                buckets,
            )
            for p in range(partitions)
        ]
        outs = [
            refs_of(
                many(bucket_decide, partitions + 1).remote(token, holder, position, partitions, *[k[b] for k in keyed]),
                partitions + 1,
            )
            for b in range(buckets)
        ]
        for out in outs:
            for partition in range(partitions):
                decided[partition].append(out[partition])
        counted = get([out[partitions] for out in outs])
        result.dropped[position] = sum(dropped for dropped, _ in counted)
        merge_figures(step, [figures for _, figures in counted])
        del scattered, keyed, outs

    get([
        write_decisions.options(**options).remote(token, holder, partition, *decided[partition])
        for partition in range(partitions)
    ])
    return result

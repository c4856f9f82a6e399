"""near_dedup's decision, distributed over Ray tasks, with the drops and figures of `NearDedup.decide`.

A unit (a record, or with `scope: group` a conversation, whose records all sit in one partition) is named by a
64-bit ref (partition << 32 | index) and ordered by its first record's (created_at, id), the local order.

1. per partition: units, their densified signatures and LSH band keys; band keys go to buckets by key;
2. per bucket: each band bucket pairs every member with its earliest member (the local star), pairs go to the
   partition of their earlier unit, which dedups them (`candidate_pairs`) and attaches that unit's signature;
3. per partition of the later unit: pairs verified on the full signatures (`verified_pairs`);
4. connected components by min-label propagation: each node's label is the least order key in its component,
   messages flow along verified edges between partitions, only from nodes whose label just fell, until none does;
5. survivors: `first` is the label itself; `highest_reward` takes the least (-reward, order key) per label;
6. every dropped unit fetches its survivor's signature and name, and its records get the step's own `drop`.

Shuffle volume per unit: `bands` band keys (key, created_at, id, ref), then 2 x `num_perm` bytes per candidate pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from distill.curation import minhash
from distill.curation.steps.near_dedup import LARGEST_CLUSTERS, NearDedup
from distill.grouping import display_key
from distill.executor.ray import get, worker_context
from distill.executor.ray_decide import refs_of, split

SHIFT = 32
LOW = (1 << SHIFT) - 1


def route(refs: np.ndarray, partitions: int, *columns: Any) -> list[Any]:
    """Rows split by the partition their ref names: [(refs, *columns)] per partition (None when empty)."""
    where = (refs >> SHIFT).astype(np.int64)
    out: list[Any] = [None] * partitions
    for partition in np.unique(where).tolist():
        index = np.flatnonzero(where == partition)
        out[partition] = (refs[index], *[pick(column, index) for column in columns])
    return out


def pick(column: Any, index: np.ndarray) -> Any:
    return column[index] if isinstance(column, np.ndarray) else [column[i] for i in index.tolist()]


def present(pieces: tuple[Any, ...]) -> list[Any]:
    return [piece for piece in pieces if piece is not None]


def step_at(token: str, holder: list[Any], position: int) -> NearDedup:
    return worker_context(token, holder).settings.steps[position]


@ray.remote
def units_task(token: str, holder: list[Any], position: int, partition: int, buckets: int, piece: Any) -> Any:
    """Outputs: the partition's unit table, then the band keys per bucket."""
    step = step_at(token, holder, position)
    if piece is None:
        return split([None, *[None] * buckets])
    handles, _, micros, keys = piece
    units = step.units(keys)
    dense = units.signatures
    refs = (np.int64(partition) << SHIFT) | np.arange(len(units.names), dtype=np.int64)
    unit_micros = micros[units.first]
    unit_ids = [keys.ids[i] for i in units.first.tolist()]
    table = {
        "names": units.names, "signatures": dense, "micros": unit_micros, "ids": unit_ids, "rewards": units.rewards,
        "member_of": units.member_of, "handles": handles, "last": units.last,
    }
    rows: list[list[Any]] = [[] for _ in range(buckets)]
    for band in range(step.bands):
        key = minhash.band_key(dense, band, step.rows)
        where = (key % np.uint64(buckets)).astype(np.int64)
        for bucket in np.unique(where).tolist():
            index = np.flatnonzero(where == bucket)
            rows[bucket].append((np.full(len(index), band), key[index], unit_micros[index],
                                 [unit_ids[i] for i in index.tolist()], refs[index]))
    return split([table, *rows])


@ray.remote
def pairs_task(partitions: int, *pieces: list[Any]) -> Any:
    """One bucket of band keys: every member of a (band, key) paired with its earliest member; pairs routed to the
    partition of the earlier unit."""
    entries = [entry for piece in pieces for entry in piece]
    if not entries:
        return split([None] * partitions)
    band = np.concatenate([e[0] for e in entries])
    key = np.concatenate([e[1] for e in entries])
    micros = np.concatenate([e[2] for e in entries])
    ids = [i for e in entries for i in e[3]]
    refs = np.concatenate([e[4] for e in entries])
    order = sorted(range(len(ids)), key=lambda i: (band[i], key[i], micros[i], ids[i]))
    left, right = [], []
    head = -1
    for position, i in enumerate(order):
        if position == 0 or band[i] != band[order[position - 1]] or key[i] != key[order[position - 1]]:
            head = i
            continue
        left.append(refs[head])
        right.append(refs[i])
    return split(route(np.array(left, dtype=np.int64), partitions, np.array(right, dtype=np.int64)))


@ray.remote
def attach_left_task(partitions: int, table: Any, *pieces: Any) -> Any:
    """At the earlier unit's partition: distinct pairs, with the earlier unit's signature, routed to the later
    unit's partition. Last output: the number of distinct pairs."""
    pieces = present(pieces)
    if not pieces:
        return split([*[None] * partitions, 0])
    pairs = np.unique(np.stack([np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])], 1), axis=0)
    left, right = pairs[:, 0], pairs[:, 1]
    signatures = table["signatures"][left & LOW]
    return split([*route(right, partitions, left, signatures), len(left)])


@ray.remote
def verify_task(threshold: float, table: Any, partitions: int, *pieces: Any) -> Any:
    """At the later unit's partition: pairs verified on the full signatures; each verified edge goes to both its
    units' partitions. Last output: the number verified."""
    pieces = present(pieces)
    if not pieces:
        return split([*[None] * partitions, 0])
    right = np.concatenate([p[0] for p in pieces])
    left = np.concatenate([p[1] for p in pieces])
    theirs = np.concatenate([p[2] for p in pieces])
    both = np.concatenate([theirs, table["signatures"][right & LOW]])
    count = len(right)
    verified = minhash.agreement(both, np.arange(count), np.arange(count) + count) >= threshold
    left, right = left[verified], right[verified]
    ends = np.concatenate([left, right])
    others = np.concatenate([right, left])
    return split([*route(ends, partitions, others), int(verified.sum())])


def own_label(table: Any, ref: int) -> tuple[int, str, int]:
    index = ref & LOW
    return (int(table["micros"][index]), table["ids"][index], ref)


@ray.remote
def label_task(partitions: int, table: Any, labels: dict[int, Any] | None, edge_count: int, *pieces: Any) -> Any:
    """One round of min-label propagation at one partition. Outputs: the labels, the messages per partition, the
    number of labels that fell (on the first round: every node's own label, sent to its neighbours)."""
    edge_pieces, messages = present(pieces[:edge_count]), pieces[edge_count:]
    if not edge_pieces:
        return split([{}, *[None] * partitions, 0])
    ends = np.concatenate([p[0] for p in edge_pieces])
    others = np.concatenate([p[1] for p in edge_pieces])
    if labels is None:
        labels = {ref: own_label(table, ref) for ref in np.unique(ends).tolist()}
        fell = set(labels)
    else:
        labels = dict(labels)
        fell = set()
        for piece in present(messages):
            for ref, label in zip(piece[0].tolist(), piece[1]):
                if label < labels[ref]:
                    labels[ref] = label
                    fell.add(ref)
    if not fell:
        return split([labels, *[None] * partitions, 0])
    send = np.flatnonzero(np.isin(ends, np.array(sorted(fell), dtype=np.int64)))
    out = route(others[send], partitions, [labels[ref] for ref in ends[send].tolist()])
    return split([labels, *out, len(fell)])


@ray.remote
def rank_task(partitions: int, table: Any, labels: dict[int, Any], highest_reward: bool) -> Any:
    """Each clustered node's survivor key, routed to its label's partition: (label, rank, node)."""
    if not labels:
        return split([None] * partitions)
    nodes = np.array(sorted(labels), dtype=np.int64)
    ranks = []
    for ref in nodes.tolist():
        micros, record_id, _ = own_label(table, ref)
        reward = table["rewards"][ref & LOW]
        first = -float(reward) if highest_reward and not np.isnan(reward) else (float("inf") if highest_reward else 0.0)
        ranks.append((first, micros, record_id, ref))
    heads = np.array([labels[ref][2] for ref in nodes.tolist()], dtype=np.int64)
    return split(route(heads, partitions, ranks, nodes))


@ray.remote
def survivor_task(partitions: int, *pieces: Any) -> Any:
    """At a label's partition: the least rank of the component is its survivor; sent back to every member."""
    pieces = present(pieces)
    if not pieces:
        return split([None] * partitions)
    best: dict[int, tuple[Any, ...]] = {}
    for heads, ranks, _ in pieces:
        for head, rank in zip(heads.tolist(), ranks):
            if head not in best or rank < best[head]:
                best[head] = rank
    nodes = np.concatenate([p[2] for p in pieces])
    survivors = np.array([best[h][3] for p in pieces for h in p[0].tolist()], dtype=np.int64)
    return split(route(nodes, partitions, survivors))


@ray.remote
def request_task(partitions: int, *pieces: Any) -> Any:
    """At a node's partition: the nodes whose survivor is another unit ask it for its signature and name."""
    pieces = present(pieces)
    if not pieces:
        return split([None] * partitions)
    nodes = np.concatenate([p[0] for p in pieces])
    survivors = np.concatenate([p[1] for p in pieces])
    moved = survivors != nodes
    return split(route(survivors[moved], partitions, nodes[moved]))


@ray.remote
def answer_task(partitions: int, table: Any, *pieces: Any) -> Any:
    """At a survivor's partition: its signature and name, sent to each unit it outlives. Last output: how many
    distinct survivors (clusters) were asked."""
    pieces = present(pieces)
    if not pieces:
        return split([*[None] * partitions, 0])
    survivors = np.concatenate([p[0] for p in pieces])
    nodes = np.concatenate([p[1] for p in pieces])
    index = survivors & LOW
    names = [table["names"][i] for i in index.tolist()]
    return split([*route(nodes, partitions, names, table["signatures"][index], survivors), len(np.unique(survivors))])


@ray.remote
def drops_task(token: str, holder: list[Any], position: int, partitions: int, table: Any, *pieces: Any) -> Any:
    """At a dropped unit's partition: the similarity to its survivor and the step's drop for each of its records.
    Outputs: this partition's decisions, their count, then per partition of a survivor its clusters' partial
    summaries (members here, and the earliest of them) for `largest_clusters`."""
    pieces = present(pieces)
    if not pieces:
        return split([[], 0, *[None] * partitions])
    step = step_at(token, holder, position)
    nodes = np.concatenate([p[0] for p in pieces])
    names = [n for p in pieces for n in p[1]]
    theirs = np.concatenate([p[2] for p in pieces])
    survivors = np.concatenate([p[3] for p in pieces])
    count = len(nodes)
    both = np.concatenate([table["signatures"][nodes & LOW], theirs])
    similarity = minhash.agreement(both, np.arange(count), np.arange(count) + count)
    unit_drops = {int(node) & LOW: step.drop(name, float(sim)) for node, name, sim in zip(nodes, names, similarity)}
    decided = []
    for i, unit in enumerate(table["member_of"].tolist()):
        drop = unit_drops.get(unit)
        if drop is not None:
            decided.append((int(table["handles"][i]), position, drop))
    partial: dict[int, list[Any]] = {}
    for node, survivor, sim in zip(nodes.tolist(), survivors.tolist(), similarity.tolist()):
        unit = node & LOW
        member = (own_label(table, node), table["names"][unit], table["last"][unit], round(float(sim), 4))
        entry = partial.setdefault(survivor, [0, member])
        entry[0] += 1
        entry[1] = min(entry[1], member)
    heads = np.array(sorted(partial), dtype=np.int64)
    summaries = route(heads, partitions, [partial[head] for head in heads.tolist()])
    return split([decided, len(decided), *summaries])


@ray.remote
def clusters_task(scope: str, table: Any, *pieces: Any) -> list[tuple[Any, ...]]:
    """At survivors' partition: each cluster's size and earliest duplicate; the LARGEST_CLUSTERS largest here."""
    merged: dict[int, list[Any]] = {}
    for heads, parts in present(pieces):
        for head, (members, first) in zip(heads.tolist(), parts):
            entry = merged.setdefault(head, [0, first])
            entry[0] += members
            entry[1] = min(entry[1], first)
    shown = display_key if scope == "group" else str
    ranked = []
    for head, (members, first) in merged.items():
        _, name, record, sim = first
        ranked.append(((-members, own_label(table, head)), {
            "size": members + 1, "survivor": shown(table["names"][head & LOW]), "duplicate": shown(name),
            "duplicate_record": record, "similarity": sim,
        }))
    return sorted(ranked, key=lambda entry: entry[0])[:LARGEST_CLUSTERS]


def near_dedup_distributed(
    step: NearDedup, position: int, per_partition: list[Any], options: dict[str, Any], token: str, holder: list[Any]
) -> tuple[list[Any], int]:
    """Each partition's decisions (object refs) and the number of records dropped; sets the step's figures."""
    partitions = buckets = len(per_partition)

    def many(task: Any, count: int) -> Any:
        return task.options(num_returns=count, **options)

    made = [
        refs_of(many(units_task, buckets + 1).remote(token, holder, position, p, buckets, piece), buckets + 1)
        for p, piece in enumerate(per_partition)
    ]
    tables = [out[0] for out in made]
    paired = [refs_of(many(pairs_task, partitions).remote(partitions, *[out[1 + b] for out in made]), partitions)
              for b in range(buckets)]
    attached = [
        refs_of(many(attach_left_task, partitions + 1).remote(partitions, tables[p], *[out[p] for out in paired]),
                partitions + 1)
        for p in range(partitions)
    ]
    verified = [
        refs_of(many(verify_task, partitions + 1).remote(
            step.params.threshold, tables[p], partitions, *[out[p] for out in attached]), partitions + 1)
        for p in range(partitions)
    ]
    units = sum(get([unit_count.remote(table) for table in tables]))
    candidate_pairs = sum(get([out[partitions] for out in attached]))
    verified_pairs = sum(get([out[partitions] for out in verified]))
    edges = [[out[p] for out in verified] for p in range(partitions)]

    labels: list[Any] = [None] * partitions
    messages: list[list[Any]] = [[] for _ in range(partitions)]
    while True:
        rounds = [
            refs_of(many(label_task, partitions + 2).remote(
                partitions, tables[p], labels[p], len(edges[p]), *edges[p], *messages[p]),
                    partitions + 2)
            for p in range(partitions)
        ]
        labels = [out[0] for out in rounds]
        messages = [[out[1 + p] for out in rounds] for p in range(partitions)]
        if sum(get([out[partitions + 1] for out in rounds])) == 0:
            break

    highest = step.params.keep == "highest_reward"
    ranked = [refs_of(many(rank_task, partitions).remote(partitions, tables[p], labels[p], highest), partitions)
              for p in range(partitions)]
    chosen = [refs_of(many(survivor_task, partitions).remote(partitions, *[out[p] for out in ranked]), partitions)
              for p in range(partitions)]
    asked = [refs_of(many(request_task, partitions).remote(partitions, *[out[p] for out in chosen]), partitions)
             for p in range(partitions)]
    answered = [
        refs_of(many(answer_task, partitions + 1).remote(partitions, tables[p], *[out[p] for out in asked]),
                partitions + 1)
        for p in range(partitions)
    ]
    dropped = [
        refs_of(many(drops_task, partitions + 2).remote(
            token, holder, position, partitions, tables[p], *[out[p] for out in answered]), partitions + 2)
        for p in range(partitions)
    ]
    largest = [
        clusters_task.options(**options).remote(step.params.scope, tables[p], *[out[2 + p] for out in dropped])
        for p in range(partitions)
    ]
    clusters = sum(get([out[partitions] for out in answered]))
    records = sum(get([out[1] for out in dropped]))
    if units:
        # The figures the step's own decide would leave, in its order.
        step.figures.clear()
        step.figures.update(
            bands=step.bands, rows=step.rows, candidate_pairs=candidate_pairs, verified_pairs=verified_pairs
        )
    step.figures["near_duplicate_clusters"] = clusters
    ranked = sorted((entry for part in get(largest) for entry in part), key=lambda entry: entry[0])
    step.figures["largest_clusters"] = [summary for _, summary in ranked[:LARGEST_CLUSTERS]]
    return [out[0] for out in dropped], records


@ray.remote
def unit_count(table: Any) -> int:
    return 0 if table is None else len(table["names"])

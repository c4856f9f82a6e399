from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field, model_validator

from distill.curation import clusters, minhash
from distill.grouping import display_key
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import STEPS, GlobalStep, StepParams, concat_keys
from distill.curation.steps.roles import has_text, in_roles


class NearDedupParams(StepParams):
    scope: Literal["group", "record"] = "group"
    roles: tuple[str, ...] | None = None
    threshold: float = Field(default=0.8, gt=0, le=1)
    shingle_size: int = Field(default=5, ge=1, le=32)
    num_perm: int = Field(default=256, ge=8, le=1024)
    bands: int | None = Field(default=None, ge=1)
    rows: int | None = Field(default=None, ge=1)
    keep: Literal["first", "highest_reward"] = "first"
    across_roles: bool = False
    """False: texts are compared only within one role (a user prompt is never a duplicate of an assistant answer)."""

    @model_validator(mode="after")
    def _bands_fit(self) -> NearDedupParams:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (then they follow from threshold and num_perm)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


@dataclass(frozen=True)
class NearKeys:
    """Per batch, for the records in scope that have words: id, group key, reward (NaN if none) and the raw
    (undensified) one-permutation MinHash signature, `num_perm` uint16 values (512 bytes by default) per record."""

    ids: list[str]
    groups: list[str]
    rewards: np.ndarray
    signatures: np.ndarray


@dataclass(frozen=True)
class NearUnits:
    """The units near_dedup compares (conversations in group scope, records in record scope): each one's name
    (group key or record id), densified signature, best reward (NaN if none), the position of its first record
    among the keys it was made from, and the id of its last record (what a report shows of a cluster); and each
    of those keys' unit (`member_of`)."""

    names: list[str]
    signatures: np.ndarray
    rewards: np.ndarray
    first: np.ndarray
    last: list[str]
    member_of: np.ndarray


class UnitSignatures(Protocol):
    """Where the clustering reads the units' densified signatures, units numbered in (created_at, id) order: an
    array in memory, or the plan's buckets on disk (`distill.plan.decide_units`)."""

    def __len__(self) -> int: ...

    def band_key(self, band: int, rows: int) -> np.ndarray:
        """Every unit's key of one LSH band (`minhash.band_key`)."""

    def agreement(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The estimated Jaccard similarity of the unit pairs (left[i], right[i]) (`minhash.agreement`)."""


class UnitNames(Protocol):
    def named(self, units: np.ndarray) -> dict[int, tuple[str, str]]:
        """unit -> (its name, its last record's id), for these units only: a decision names few of them."""


@dataclass(frozen=True)
class UnitsInMemory:
    """`UnitSignatures` and `UnitNames` of units held whole."""

    units: NearUnits

    def __len__(self) -> int:
        return len(self.units.signatures)

    def band_key(self, band: int, rows: int) -> np.ndarray:
        return minhash.band_key(self.units.signatures, band, rows)

    def agreement(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return minhash.agreement(self.units.signatures, left, right)

    def named(self, units: np.ndarray) -> dict[int, tuple[str, str]]:
        return {unit: (self.units.names[unit], self.units.last[unit]) for unit in units.tolist()}


@STEPS.register("near_dedup")
class NearDedup(GlobalStep[NearKeys]):
    """Drops near duplicates (`near_duplicate`): texts whose word-shingle Jaccard similarity is >= `threshold`.

    MinHash signatures (one-permutation hashing over normalised word `shingle_size`-grams, see `distill.curation.minhash`)
    are banded for LSH; candidate pairs are verified on the full signature, clusters are the connected components
    of verified pairs, and one survivor per cluster is kept: `keep: first` (earliest (created_at, id)) or
    `keep: highest_reward` (ties by (created_at, id)). Texts shorter than one shingle are compared exactly.
    `scope: group` (default) compares whole conversations (the union of their records' shingles) and drops every
    in-scope record of a duplicate conversation; `scope: record` compares single records, optionally only `roles`.
    Shingles match only within one role (each role salts its hashes) unless `across_roles: true`.
    The quarantine row's detail names the survivor (`duplicate_of`) and the estimated `similarity` to it.
    """

    kind = "near_dedup"
    Params = NearDedupParams
    reasons = (Reason.near_duplicate,)
    params: NearDedupParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        self.bands, self.rows = (p.bands, p.rows) if p.bands else minhash.lsh_parameters(p.threshold, p.num_perm)

    def keys(self, batch: Sequence[Record]) -> NearKeys:
        chosen = in_roles(batch, self.params.roles, has_text)
        across = self.params.across_roles
        salts = np.array([_role_salt("" if across or not r.role else r.role.value) for r in chosen], dtype=np.uint64)
        hashes, owners = minhash.shingle_hashes([r.text for r in chosen], self.params.shingle_size, salts)
        signatures = minhash.raw_signatures(hashes, owners, len(chosen), self.params.num_perm)
        has_words = np.zeros(len(chosen), dtype=bool)
        has_words[owners] = True
        kept = [r for r, keep in zip(chosen, has_words) if keep]
        return NearKeys(
            ids=[r.id for r in kept],
            groups=self.context.group_keys(kept) if self.params.scope == "group" else [],
            rewards=np.array([np.nan if r.reward is None else r.reward for r in kept], dtype=np.float64),
            signatures=signatures[has_words],
        )

    def decide(self, keys: Sequence[NearKeys]) -> dict[str, Drop]:
        joined = concat_keys(keys) if keys else NearKeys([], [], np.empty(0), np.empty((0, 0), np.uint16))
        units = UnitsInMemory(self.units(joined))
        unit_drops = self.decide_units(units, units.units.rewards, units)
        if self.params.scope == "record":
            return unit_drops
        return {record_id: unit_drops[group] for record_id, group in zip(joined.ids, joined.groups) if group in unit_drops}

    def units(self, keys: NearKeys) -> NearUnits:
        """What is compared: each conversation (group scope: keys holding whole groups) or record, in the order of
        its first record (keys arrive in (created_at, id) order)."""
        if self.params.scope == "group":
            names, member_of, raw, rewards = merge_groups(keys.groups, keys.signatures, keys.rewards)
            first = np.full(len(names), len(member_of), dtype=np.int64)
            np.minimum.at(first, member_of, np.arange(len(member_of)))
            last = _last_members(keys.ids, member_of, len(names))
        else:
            names, raw, rewards = list(keys.ids), keys.signatures, keys.rewards
            member_of = first = np.arange(len(names))
            last = list(keys.ids)
        return NearUnits(names, minhash.densify(raw), rewards, first, last, member_of)

    def decide_units(self, signatures: UnitSignatures, rewards: np.ndarray, names: UnitNames) -> dict[str, Drop]:
        """The drops of the units (by name: a group key or a record id), numbered in (created_at, id) order of
        their first record: the clusters' survivors and the figures."""
        survivor, similarity = self.clustered(signatures, rewards, names)
        duplicate = np.flatnonzero(survivor != np.arange(len(survivor)))
        kept_by = survivor[duplicate]
        named = names.named(np.union1d(duplicate, kept_by))
        drops: dict[str, Drop] = {}
        for unit, kept in zip(duplicate.tolist(), kept_by.tolist()):
            drops[named[unit][0]] = self.drop(named[kept][0], float(similarity[unit]))
        return drops

    def clustered(
        self, signatures: UnitSignatures, rewards: np.ndarray, names: UnitNames
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each unit's survivor (itself when kept) and estimated similarity to it, and the step's figures (which
        name the largest clusters' units): what the drops are made of, one unit at a time if need be."""
        survivor, similarity = self._cluster(signatures, rewards)
        kept_by = survivor[survivor != np.arange(len(survivor))]
        self.figures["near_duplicate_clusters"] = int(len(np.unique(kept_by)))
        self.figures["largest_clusters"] = _largest_clusters(survivor, similarity, names, self.params.scope)
        return survivor, similarity

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(bands, units) uint64: every band's keys of these densified signatures (`minhash.band_key`)."""
        return np.stack([minhash.band_key(signatures, band, self.rows) for band in range(self.bands)])

    def decide_bytes_per_key(self) -> int:
        """What deciding holds per record at its peak, for the plan's bucket count: the raw signature twice (the
        spills' copy and the ordered one) and the id and group key."""
        return 4 * self.params.num_perm + 300

    def drop(self, kept_as: str, similarity: float) -> Drop:
        """The drop of a unit whose cluster keeps `kept_as` (a group key or a record id)."""
        shown = display_key(kept_as) if self.params.scope == "group" else kept_as
        estimate = round(similarity, 4)
        what = "conversation" if self.params.scope == "group" else "text"
        return Drop(
            Reason.near_duplicate,
            (f"{what} is a near duplicate of {shown} (estimated Jaccard {estimate:.2f})",),
            {"duplicate_of": shown, "similarity": estimate},
        )

    def _cluster(self, signatures: UnitSignatures, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(survivor index, estimated similarity to it) for each unit (record or conversation), in input order."""
        count = len(signatures)
        if count == 0:
            return np.empty(0, np.int64), np.empty(0)
        codes = np.empty(0, np.int64)
        for band in range(self.bands):
            codes = clusters.with_pairs(codes, *clusters.equal_key_pairs(signatures.band_key(band, self.rows)), count)
        left, right = clusters.pairs_of(codes, count)
        del codes
        verified = signatures.agreement(left, right) >= self.params.threshold
        label = clusters.components(count, left[verified], right[verified])
        # Units arrive in (created_at, id) order, so the index is the `first` rank.
        rank = np.arange(count, dtype=np.float64)
        if self.params.keep == "highest_reward":
            reward_rank = np.argsort(np.argsort(-np.nan_to_num(rewards, nan=-np.inf), kind="stable"), kind="stable")
            rank = reward_rank.astype(np.float64)
        survivor = clusters.survivors(label, rank)
        similarity = np.ones(count)
        moved = np.flatnonzero(survivor != np.arange(count))
        similarity[moved] = signatures.agreement(moved, survivor[moved])
        self.figures.update(
            bands=self.bands, rows=self.rows, candidate_pairs=int(len(left)), verified_pairs=int(verified.sum())
        )
        return survivor, similarity

    def manifest_extra(self) -> dict[str, Any]:
        return dict(self.figures)


LARGEST_CLUSTERS = 5


def _last_members(ids: list[str], member_of: np.ndarray, count: int) -> list[str]:
    """Each group's last record id in (created_at, id) order: in a conversation, usually its last answer."""
    last: dict[int, str] = {}
    for record_id, unit in zip(ids, member_of.tolist()):
        last[unit] = record_id
    return [last.get(unit, "") for unit in range(count)]


def _largest_clusters(
    survivor: np.ndarray, similarity: np.ndarray, names: UnitNames, scope: str
) -> list[dict[str, Any]]:
    """The LARGEST_CLUSTERS largest clusters (ties: earliest survivor), each with its survivor, its first duplicate,
    that duplicate's similarity and a record of it (`duplicate_record`, its last record in group scope, for a report
    to show its text): bounded, for the manifest, and only the units shown are named."""
    moved = np.flatnonzero(survivor != np.arange(len(survivor)))
    if not len(moved):
        return []
    heads, first_index, sizes = np.unique(survivor[moved], return_index=True, return_counts=True)
    order = np.lexsort((heads, -sizes))[:LARGEST_CLUSTERS]
    shown_heads, duplicates = heads[order], moved[first_index[order]]
    named = names.named(np.union1d(shown_heads, duplicates))
    shown = display_key if scope == "group" else str
    largest = []
    for k, head, duplicate in zip(order.tolist(), shown_heads.tolist(), duplicates.tolist()):
        largest.append({
            "size": int(sizes[k]) + 1,
            "survivor": shown(named[head][0]),
            "duplicate": shown(named[duplicate][0]),
            "duplicate_record": named[duplicate][1],
            "similarity": round(float(similarity[duplicate]), 4),
        })
    return largest


@cache
def _role_salt(role: str) -> int:
    return minhash.digest64(f"near_dedup-role\x1f{role}")


def merge_groups(
    groups: list[str], raw: np.ndarray, rewards: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Conversation signatures: the element-wise minimum of their records' raw signatures (= the signature of the
    union of their shingles). Returns (group keys in first-seen order, each record's group index, signatures,
    each group's best reward)."""
    index: dict[str, int] = {}
    member_of = np.array([index.setdefault(group, len(index)) for group in groups], dtype=np.int64)
    order = np.argsort(member_of, kind="stable")
    starts = np.flatnonzero(np.r_[True, member_of[order][1:] != member_of[order][:-1]]) if len(order) else order
    merged = reduce_runs(np.minimum, raw, order, starts) if len(order) else raw
    best = np.fmax.reduceat(rewards[order], starts) if len(order) else rewards
    return list(index), member_of, merged, best


LONG_RUN = 64


def reduce_runs(ufunc: np.ufunc, rows: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """`ufunc.reduceat(rows[order], starts, axis=0)` for a 2-D array, ~5x faster and without the reordered copy:
    numpy's reduceat walks a 2-D array one run at a time (0.45 s for 100k signatures in 25k conversations), while
    this folds in each run's k-th row for all runs at once, one numpy call per k; runs longer than LONG_RUN rows
    are reduced one by one instead, so the number of calls stays bounded whatever one conversation's length."""
    counts = np.diff(starts, append=len(order))
    merged = rows[order[starts]]
    longer = np.flatnonzero(counts > 1)
    for k in range(1, LONG_RUN):
        longer = longer[counts[longer] > k]
        if not len(longer):
            break
        merged[longer] = ufunc(merged[longer], rows[order[starts[longer] + k]])
    for run in np.flatnonzero(counts > LONG_RUN).tolist():
        merged[run] = ufunc.reduce(rows[order[starts[run] : starts[run] + counts[run]]], axis=0)
    return merged

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import xxhash

from distill.hashing import hash64
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import STEPS, GlobalStep, StepParams, concat_keys
from distill.curation.steps.roles import has_text, in_roles
from distill.curation.textnorm import exact_forms


class ExactDedupParams(StepParams):
    scope: Literal["group", "record"] = "group"
    roles: tuple[str, ...] | None = None
    across_roles: bool = False
    """False: texts are compared only within one role (a user prompt is never a duplicate of an assistant answer)."""


@dataclass(frozen=True)
class ExactKeys:
    """Per batch, for the records in scope: id, group key (group scope only) and a 64-bit hash of the normalised
    text seeded by its role (`role_seeded`), held as a uint64 array: 8 bytes per record."""

    ids: list[str]
    groups: list[str]
    hashes: np.ndarray


@STEPS.register("exact_dedup")
class ExactDedup(GlobalStep[ExactKeys]):
    """Drops exact duplicates (`duplicate`) after unicode/case/whitespace normalisation.

    `scope: group` (default) compares whole conversations, each the ordered (role, text) of its group's records, and
    drops every record of a later copy; `scope: record` compares single records, optionally only some `roles`.
    Texts match only within one role unless `across_roles: true`.
    The survivor is the first by (created_at, id). One pass over 64-bit keys: O(n) time, one int per record kept.
    """

    kind = "exact_dedup"
    Params = ExactDedupParams
    reasons = (Reason.duplicate,)
    params: ExactDedupParams

    def keys(self, batch: Sequence[Record]) -> ExactKeys:
        chosen = in_roles(batch, self.params.roles, has_text)
        across = self.params.across_roles
        forms = exact_forms([r.text for r in chosen])
        seeds = [_role_seed("" if across or not r.role else r.role._value_) for r in chosen]
        hashes = np.fromiter(map(role_seeded, forms, seeds), dtype=np.uint64, count=len(chosen))
        groups = self.context.group_keys(chosen) if self.params.scope == "group" else []
        return ExactKeys([r.id for r in chosen], groups, hashes)

    def decide(self, keys: Sequence[ExactKeys]) -> dict[str, Drop]:
        if self.params.scope == "record":
            return self._decide_records(keys)
        return self._decide_groups(keys)

    @staticmethod
    def _decide_records(keys: Sequence[ExactKeys]) -> dict[str, Drop]:
        # Each record against the first record, in (created_at, id) order, with its 64-bit key (never the text).
        batch = concat_keys(keys) if keys else None
        if batch is None or not batch.ids:
            return {}
        drops: dict[str, Drop] = {}
        for i, first in later_copies(batch.hashes):
            kept = batch.ids[first]
            if kept != batch.ids[i]:
                drops[batch.ids[i]] = Drop(Reason.duplicate, (f"same text as {kept}",), {"duplicate_of": kept})
        return drops

    @staticmethod
    def _decide_groups(keys: Sequence[ExactKeys]) -> dict[str, Drop]:
        # Each group against the first group, by its first record's (created_at, id), with the same conversation.
        batch = concat_keys(keys) if keys else None
        if batch is None or not batch.ids:
            return {}
        conversations = Conversations.of(batch.groups, batch.hashes)
        drops: dict[str, Drop] = {}
        for group, first in later_copies(conversations.hashes):
            kept = conversations.names[first]
            drop = Drop(Reason.duplicate, (f"conversation repeats group {kept}",), {"duplicate_of": kept})
            drops.update(dict.fromkeys((batch.ids[i] for i in conversations.records_of(group)), drop))
        return drops


def later_copies(values: np.ndarray) -> list[tuple[int, int]]:
    """(i, first) for each value equal to an earlier one: its index, and the index of the first with that value."""
    _, firsts, which = np.unique(values, return_index=True, return_inverse=True)
    first_of = firsts[which.reshape(-1)]
    copies = np.flatnonzero(first_of != np.arange(len(values)))
    return list(zip(copies.tolist(), first_of[copies].tolist()))


@dataclass(frozen=True)
class Conversations:
    """The groups of a run of records (in (created_at, id) order) as conversations: each group's name, numbered by
    its first record; which group each record is in; each group's conversation hash. numpy does the grouping, and
    hash64 runs once per group over its records' digests as one buffer: at 1e6 bench records, ~1 µs a record of
    Python loops before (dicts of per-group lists) -> ~0.2."""

    names: list[str]
    group_of: np.ndarray
    hashes: np.ndarray
    order: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, groups: Sequence[str], digests: np.ndarray) -> Conversations:
        numbers: dict[str, int] = {}
        group_of = np.fromiter((numbers.setdefault(g, len(numbers)) for g in groups), dtype=np.int64, count=len(groups))
        order = np.argsort(group_of, kind="stable")  # by group, each group's records in their own order
        starts = np.searchsorted(group_of[order], np.arange(len(numbers) + 1))
        # A conversation's hash: hash64 of its records' digests, big-endian, in (created_at, id) order.
        buffer = digests[order].astype(">u8").tobytes()
        bounds = (starts * 8).tolist()
        hashes = np.fromiter(
            (hash64(buffer[start:end]) for start, end in zip(bounds, bounds[1:])), dtype=np.uint64, count=len(numbers)
        )
        return cls(list(numbers), group_of, hashes, order, starts)

    def records_of(self, group: int) -> list[int]:
        return self.order[self.starts[group] : self.starts[group + 1]].tolist()


role_seeded: Callable[[bytes, int], int] = xxhash.xxh3_64_intdigest
"""A text form's key: XXH3 of the form with its role's hash as the seed, so texts of different roles never share a
key (unless `across_roles`). Seeded, not hashed with the role's name before it: that copied every form first, 0.44
against 0.28 µs a bench text (bench/RESULTS.md)."""


@cache
def _role_seed(role: str) -> int:
    return hash64(role)

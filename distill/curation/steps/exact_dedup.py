from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

from distill.hashing import hash64
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import STEPS, GlobalStep, StepParams
from distill.curation.steps.roles import has_text, in_roles
from distill.curation.textnorm import exact_form_bytes


class ExactDedupParams(StepParams):
    scope: Literal["group", "record"] = "group"
    roles: tuple[str, ...] | None = None
    across_roles: bool = False
    """False: texts are compared only within one role (a user prompt is never a duplicate of an assistant answer)."""


@dataclass(frozen=True)
class ExactKeys:
    """Per batch, for the records in scope: id, group key (group scope only) and a 64-bit hash of (role, normalised
    text), held as a uint64 array: 8 bytes per record."""

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
        hashes = np.fromiter(
            (hash64(_role_prefix("" if across or not r.role else r.role.value) + exact_form_bytes(r.text))
             for r in chosen),
            dtype=np.uint64, count=len(chosen),
        )
        groups = [self.context.group_key(r) for r in chosen] if self.params.scope == "group" else []
        return ExactKeys([r.id for r in chosen], groups, hashes)

    def decide(self, keys: Sequence[ExactKeys]) -> dict[str, Drop]:
        if self.params.scope == "record":
            return self._decide_records(keys)
        return self._decide_groups(keys)

    @staticmethod
    def _decide_records(keys: Sequence[ExactKeys]) -> dict[str, Drop]:
        # The hash set: one entry per distinct 64-bit key (never the text), one pass, O(n) expected time.
        survivors: dict[int, str] = {}
        drops: dict[str, Drop] = {}
        for batch in keys:
            for record_id, digest in zip(batch.ids, batch.hashes.tolist()):
                survivor = survivors.setdefault(digest, record_id)
                if survivor != record_id:
                    drops[record_id] = Drop(
                        Reason.duplicate, (f"same text as {survivor}",), {"duplicate_of": survivor}
                    )
        return drops

    @staticmethod
    def _decide_groups(keys: Sequence[ExactKeys]) -> dict[str, Drop]:
        members: dict[str, list[str]] = {}
        digests: dict[str, list[int]] = {}
        for batch in keys:
            for record_id, group, digest in zip(batch.ids, batch.groups, batch.hashes.tolist()):
                members.setdefault(group, []).append(record_id)
                digests.setdefault(group, []).append(digest)
        survivors: dict[int, str] = {}
        drops: dict[str, Drop] = {}
        # dicts keep insertion order, and records arrive in (created_at, id) order: the first group seen is earliest.
        for group, record_ids in members.items():
            conversation = conversation_hash(digests[group])
            survivor = survivors.setdefault(conversation, group)
            if survivor != group:
                drop = Drop(Reason.duplicate, (f"conversation repeats group {survivor}",), {"duplicate_of": survivor})
                drops.update(dict.fromkeys(record_ids, drop))
        return drops


def conversation_hash(digests: Sequence[int]) -> int:
    """A conversation's key: the hash of its records' (role, text) hashes in (created_at, id) order."""
    return hash64(b"".join(d.to_bytes(8, "big") for d in digests))


@cache
def _role_prefix(role: str) -> bytes:
    return f"{role}\x1f".encode()

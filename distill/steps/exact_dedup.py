from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from distill.hashing import hash64, normalize_text
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.steps.base import STEPS, GlobalStep, StepParams


class ExactDedupParams(StepParams):
    scope: Literal["group", "record"] = "group"
    roles: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ExactKeys:
    """Per batch, for the records in scope: id, group key and a 64-bit hash of (role, normalised text)."""

    ids: list[str]
    groups: list[str]
    hashes: list[int]


@STEPS.register("exact_dedup")
class ExactDedup(GlobalStep[ExactKeys]):
    """Drops exact duplicates (`duplicate`) after unicode/case/whitespace normalisation.

    `scope: group` (default) compares whole conversations, each the ordered (role, text) of its group's records, and
    drops every record of a later copy; `scope: record` compares single records, optionally only some `roles`.
    The survivor is the first by (created_at, id). One pass over 64-bit keys: O(n) time, one int per record kept.
    """

    kind = "exact_dedup"
    Params = ExactDedupParams
    reasons = (Reason.duplicate,)
    params: ExactDedupParams

    def keys(self, batch: Sequence[Record]) -> ExactKeys:
        roles = set(self.params.roles) if self.params.roles is not None else None
        group_key = self.context.group_key
        keys = ExactKeys([], [], [])
        for record in batch:
            if record.text is None or (roles is not None and (record.role is None or record.role.value not in roles)):
                continue
            role = record.role.value if record.role else ""
            keys.ids.append(record.id)
            keys.groups.append(group_key(record))
            keys.hashes.append(hash64(f"{role}\x1f{normalize_text(record.text)}"))
        return keys

    def decide(self, keys: Sequence[ExactKeys]) -> dict[str, Drop]:
        if self.params.scope == "record":
            return self._decide_records(keys)
        return self._decide_groups(keys)

    @staticmethod
    def _decide_records(keys: Sequence[ExactKeys]) -> dict[str, Drop]:
        survivors: dict[int, str] = {}
        drops: dict[str, Drop] = {}
        for batch in keys:
            for record_id, digest in zip(batch.ids, batch.hashes):
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
            for record_id, group, digest in zip(batch.ids, batch.groups, batch.hashes):
                members.setdefault(group, []).append(record_id)
                digests.setdefault(group, []).append(digest)
        survivors: dict[int, str] = {}
        drops: dict[str, Drop] = {}
        # dicts keep insertion order, and records arrive in (created_at, id) order: the first group seen is earliest.
        for group, record_ids in members.items():
            conversation = hash64(b"".join(d.to_bytes(8, "big") for d in digests[group]))
            survivor = survivors.setdefault(conversation, group)
            if survivor != group:
                drop = Drop(Reason.duplicate, (f"conversation repeats group {survivor}",), {"duplicate_of": survivor})
                drops.update(dict.fromkeys(record_ids, drop))
        return drops

"""Conversations: a group's records in (created_at, id) order, their alternatives, gaps and the firewall."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Category, Label, Record, Role

GapPolicy = Literal["cut", "keep", "drop_group"]


def message(record: Record) -> dict[str, Any]:
    """A record as a chat message in TRL's shape: role, content, and tool_calls / name when present."""
    out: dict[str, Any] = {"role": record.role.value if record.role else Role.user.value, "content": record.text or ""}
    if record.tool_calls:
        out["tool_calls"] = record.tool_calls
    if record.name is not None:
        out["name"] = record.name
    return out


def is_assistant(record: Record) -> bool:
    return record.role is Role.assistant


@dataclass(frozen=True)
class Firewall:
    """Which categories may feed a task's trained side.

    A forbidden category blocks any record it is on; a missing category blocks only a completion (the turn that is
    trained on), and only when the task requires categories.
    """

    allowed: frozenset[Category]
    reason: Reason
    require_category: bool = False

    def check(self, record: Record, *, completion: bool = True) -> Drop | None:
        if record.category is None:
            if self.require_category and completion:
                return Drop(self.reason, ("no category, and task.require_category=true",))
            return None
        if record.category in self.allowed:
            return None
        allowed = ", ".join(sorted(c.value for c in self.allowed))
        return Drop(self.reason, (f"category {record.category.value} is not allowed into this task's output (allowed: {allowed})",))


def sft_firewall(include_partial: bool, require_category: bool) -> Firewall:
    """SFT trains on accepted records only, plus partially_accepted ones with `include_partial`."""
    allowed = {Category.accepted} | ({Category.partially_accepted} if include_partial else set())
    return Firewall(frozenset(allowed), Reason.unsafe_sft_category, require_category)


def selection_key(record: Record) -> tuple[Any, ...]:
    """Best first: label chosen, then higher reward, then unscored, then label rejected; ties by (created_at, id)."""
    if record.label is Label.chosen:
        tier, reward = 0, 0.0
    elif record.label is Label.rejected:
        tier, reward = 3, 0.0
    elif record.reward is not None:
        tier, reward = 1, -record.reward
    else:
        tier, reward = 2, 0.0
    return (tier, reward, record.order_key())


def select_alternatives(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Assistant records sharing a group_id answer one prompt: keep the best of each set. Returns (kept, others)."""
    alternatives: dict[str, list[Record]] = {}
    for record in records:
        if is_assistant(record) and record.group_id is not None:
            alternatives.setdefault(record.group_id, []).append(record)
    losers = {
        loser.id
        for candidates in alternatives.values()
        if len(candidates) > 1
        for loser in sorted(candidates, key=selection_key)[1:]
    }
    kept = [r for r in records if r.id not in losers]
    others = [r for r in records if r.id in losers]
    return kept, others


def holes(kept: Sequence[Record], removed: Iterable[Record]) -> list[Record]:
    """Removed turns that leave a hole: all of them, except alternatives whose sibling is still there."""
    answered = {r.group_id for r in kept if is_assistant(r) and r.group_id is not None}
    return sorted(
        (r for r in removed if not (is_assistant(r) and r.group_id is not None and r.group_id in answered)),
        key=Record.order_key,
    )


def apply_gap_policy(
    kept: Sequence[Record], gaps: Sequence[Record], policy: GapPolicy
) -> tuple[list[Record], list[Record]]:
    """Returns (exported turns, turns lost to the gap). `cut` keeps the turns up to the last assistant turn
    before the first hole; `keep` ignores holes; `drop_group` drops the whole conversation when it has one."""
    if not gaps or policy == "keep":
        return list(kept), []
    if policy == "drop_group":
        return [], list(kept)
    first_hole = gaps[0].order_key()
    before = [r for r in kept if r.order_key() < first_hole]
    last_assistant = max((i for i, r in enumerate(before) if is_assistant(r)), default=-1)
    exported = before[: last_assistant + 1]
    return exported, list(kept[len(exported) :])

"""Conversations: a group's records in (created_at, id) order, their alternatives, gaps and the firewall."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from distill.hashing import sha256_hex
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Category, Label, Record, Role

GapPolicy = Literal["cut", "keep", "drop_group"]


REASONING_KEY = "reasoning_content"
"""The message key for an assistant's reasoning: what the Qwen3 and DeepSeek-R1 chat templates and TRL's response
parsers read."""


@dataclass(frozen=True)
class ToolChain:
    """How a conversation's tool calls pair with its tool turns: the id of every call (the log's own, else a derived
    one), the call each tool turn answers, and the records that break a chain, with why."""

    call_ids: dict[str, tuple[str, ...]]
    reply_ids: dict[str, str]
    broken: dict[str, str]


NO_TOOL_CHAIN = ToolChain({}, {}, {})
"""The chain of a conversation without tool calls or replies: nothing to pair, nothing broken (never changed)."""


def plain_turns(records: Iterable[Record]) -> bool:
    """Whether a conversation's turns are all plain: no tool call, no tool turn or reply id, no alternatives
    (group_id). Its example is built in one pass (`SftTask`); most logged conversations are plain."""
    for record in records:
        if record.tool_calls or record.role is Role.tool or record.tool_call_id is not None or record.group_id is not None:
            return False
    return True


def derived_call_id(record: Record, index: int) -> str:
    """A deterministic id for a call the log gave none: the same record gives the same id on every machine."""
    return f"call_{sha256_hex(f'{record.id}#{index}')[:24]}"


def tool_chain(records: Sequence[Record]) -> ToolChain:
    """Pairs each tool turn with a call of the assistant turn before it: by `tool_call_id` when the turn has one,
    else with the first call still unanswered (calls and replies in order). Every call must be answered before the
    next non-tool turn. A call left unanswered breaks its assistant turn and the replies it already had; a reply
    with no call to answer breaks itself."""
    if not any(record.tool_calls or record.role is Role.tool for record in records):
        return NO_TOOL_CHAIN  # most conversations: no call, no reply, nothing to pair
    call_ids: dict[str, tuple[str, ...]] = {}
    reply_ids: dict[str, str] = {}
    broken: dict[str, str] = {}
    pending: dict[str, Record] = {}
    replies: dict[str, list[Record]] = {}

    def break_pending(why: str) -> None:
        for call_id, caller in pending.items():
            broken.setdefault(caller.id, f"tool call {call_id} {why}")
            for reply in replies.get(caller.id, ()):
                broken.setdefault(reply.id, f"answers a call of {caller.id}, whose other calls are unanswered")
        pending.clear()

    for record in records:
        if record.role is Role.tool:
            call_id = record.tool_call_id if record.tool_call_id is not None else next(iter(pending), None)
            caller = pending.pop(call_id, None) if call_id is not None else None
            if caller is None:
                wanted = f"call {record.tool_call_id}" if record.tool_call_id is not None else "any call"
                broken[record.id] = f"tool reply without its call: no unanswered {wanted} before it"
                continue
            reply_ids[record.id] = call_id
            replies.setdefault(caller.id, []).append(record)
            continue
        if pending:
            break_pending(f"has no reply before turn {record.id}")
        if is_assistant(record) and record.tool_calls:
            ids = tuple(
                str(call["id"]) if isinstance(call, dict) and call.get("id") not in (None, "") else derived_call_id(record, i)
                for i, call in enumerate(record.tool_calls)
            )
            call_ids[record.id] = ids
            pending.update((call_id, record) for call_id in ids)
    if pending:
        break_pending("has no reply: the conversation ends first")
    return ToolChain(call_ids, reply_ids, broken)


def tool_call_message(call: Any, call_id: str) -> dict[str, Any]:
    """One call in TRL's shape {id, type: function, function: {name, arguments}} (a flat {name, arguments} is
    wrapped)."""
    if not isinstance(call, dict):
        return {"id": call_id, "type": "function", "function": {"name": str(call)}}
    rest = {key: value for key, value in call.items() if key not in ("id", "type", "function", "name", "arguments")}
    function = call.get("function")
    if not isinstance(function, dict):
        function = {key: call[key] for key in ("name", "arguments") if key in call}
    return {"id": call_id, "type": call.get("type") or "function", "function": function, **rest}


def message(record: Record, chain: ToolChain | None = None, *, include_reasoning: bool = False) -> dict[str, Any]:
    """A record as a chat message in TRL's shape: role, content, and when present tool_calls (with their ids),
    tool_call_id, name, and (only when asked) the reasoning under `reasoning_content`."""
    # `_value_`, not `.value`: an enum's `value` is a property, slow beside the rest of a message.
    out: dict[str, Any] = {"role": record.role._value_ if record.role else _USER, "content": record.text or ""}
    if include_reasoning and record.reasoning:
        out[REASONING_KEY] = record.reasoning
    if record.tool_calls:
        ids = chain.call_ids.get(record.id) if chain is not None else None
        if ids is None:
            ids = tuple(
                str(c["id"]) if isinstance(c, dict) and c.get("id") else derived_call_id(record, i)
                for i, c in enumerate(record.tool_calls)
            )
        out["tool_calls"] = [tool_call_message(call, call_id) for call, call_id in zip(record.tool_calls, ids)]
    reply_id = chain.reply_ids.get(record.id) if chain is not None else None
    if reply_id is not None or record.tool_call_id is not None:
        out["tool_call_id"] = reply_id if reply_id is not None else record.tool_call_id
    if record.name is not None:
        out["name"] = record.name
    return out


_USER = Role.user.value
_ASSISTANT = Role.assistant


def is_assistant(record: Record) -> bool:
    return record.role is _ASSISTANT


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
        category = record.category
        if category is None:
            if self.require_category and completion:
                return Drop(self.reason, ("no category, and task.require_category=true",))
            return None
        if category in self.allowed:
            return None
        return self._refusal(category)

    @cache
    def _refusal(self, category: Category) -> Drop:
        """One drop per refused category, shared by its records (a Drop never changes), instead of the same message
        built again for each refused record."""
        allowed = ", ".join(sorted(c.value for c in self.allowed))
        return Drop(self.reason, (f"category {category.value} is not allowed into this task's output (allowed: {allowed})",))


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
    if not any(record.group_id is not None for record in records):
        return list(records), []  # most conversations: no alternatives to choose between
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
    removed = list(removed)
    if not removed:
        return []
    answered = {r.group_id for r in kept if is_assistant(r) and r.group_id is not None}
    return sorted(
        (r for r in removed if not (is_assistant(r) and r.group_id is not None and r.group_id in answered)),
        key=Record.order_key,
    )


def apply_gap_policy(
    kept: Sequence[Record], gaps: Sequence[Record], policy: GapPolicy
) -> tuple[list[Record], list[Record]]:
    """Returns (exported turns, turns lost to the gap). `cut` keeps the turns up to the last assistant turn
    before the first hole that calls no tool (so no call goes out without its reply); `keep` ignores holes;
    `drop_group` drops the whole conversation when it has one."""
    if not gaps or policy == "keep":
        return list(kept), []
    if policy == "drop_group":
        return [], list(kept)
    first_hole = gaps[0].order_key()
    before = [r for r in kept if r.order_key() < first_hole]
    last_assistant = max((i for i, r in enumerate(before) if is_assistant(r) and not r.tool_calls), default=-1)
    exported = before[: last_assistant + 1]
    return exported, list(kept[len(exported) :])

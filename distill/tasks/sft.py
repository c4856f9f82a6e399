from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from jinja2.exceptions import TemplateError
from pydantic import PositiveInt, ValidationInfo, field_validator

from distill.grouping import Group
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record, Role
from distill.tasks.base import FIREWALL_STEP, TASK_STEP, TASKS, Example, Task, TaskOutput, TaskParams, make_example
from distill.tokens import TokenBudget
from distill.tasks.conversation import (
    NO_TOOL_CHAIN,
    GapPolicy,
    ToolChain,
    apply_gap_policy,
    holes,
    is_assistant,
    message,
    plain_turns,
    select_alternatives,
    sft_firewall,
    tool_chain,
)


class SftParams(TaskParams):
    # Kept only to point the old flag at its own task: instruction SFT is `task=sft_instruction`.
    format: Literal["chat", "instruction"] = "chat"
    include_partial: bool = False
    # What a partially_accepted assistant turn (let in by include_partial) is: trained on, or context only (kept
    # in the conversation, masked from the loss by the flavours that can: openai `weight: 0`, axolotl `train`).
    partial_turns: Literal["train", "context"] = "train"
    on_gap: GapPolicy = "cut"
    # A conversation over this many tokens (chat template applied) is cut at its last assistant turn that fits, or
    # dropped (`on_overflow`); null: no budget.
    max_tokens: PositiveInt | None = None
    on_overflow: Literal["cut", "drop"] = "cut"
    # Add each assistant turn's reasoning to its message (`reasoning_content`).
    include_reasoning: bool = False

    @field_validator("format")
    @classmethod
    def _instruction_is_its_own_task(cls, value: str) -> str:
        if value == "instruction":
            raise ValueError("instruction SFT is its own task now: use task=sft_instruction")
        return value

    @field_validator("partial_turns")
    @classmethod
    def _context_needs_partial_chat_turns(cls, value: str, info: ValidationInfo) -> str:
        if value == "context" and not info.data.get("include_partial"):
            raise ValueError("only partially_accepted turns can be context: set task.include_partial=true too")
        return value


_ASSISTANT = Role.assistant


@TASKS.register("sft")
class SftTask(Task):
    """Chat SFT: one `{"messages": [...]}` line per conversation (a group's records in (created_at, id) order).
    Instruction SFT is its own task, `sft_instruction` (`distill.tasks.instruction`).

    Firewall (`unsafe_sft_category`): a rejected or needs_human_review record never reaches a line;
    partially_accepted only with `include_partial`. Of alternatives sharing a group_id only the best stays
    (`not_selected`). A dropped turn leaves a hole handled by `on_gap` (`after_gap`); a conversation without an
    assistant turn is no example (`no_assistant_turn`). With `max_tokens`, a conversation longer than the budget
    (the tokenizer's count of it rendered with its chat template, else the length proxy) is cut after its last
    assistant turn that fits (`on_overflow=cut`) or dropped (`drop`); the turns left out are `too_long`. A
    conversation the chat template refuses (`raise_exception`) is a `schema_violation`. With `include_reasoning`, each
    assistant turn's reasoning goes into its message (`reasoning_content`).
    """

    kind = "sft"
    Params = SftParams
    params: SftParams
    schema = "sft_chat_line"

    def __init__(self, params: SftParams) -> None:
        super().__init__(params)
        self.firewall = sft_firewall(params.include_partial, params.require_category)

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        for group in groups:
            self._build_conversation(group, output)
        return output

    def _build_conversation(self, group: Group, output: TaskOutput) -> None:
        if self.params.max_tokens is None and plain_turns(group.records):
            self._build_plain_conversation(group, output)
            return
        passed, blocked = [], []
        for record in group.records:
            drop = self.firewall.check(record, completion=is_assistant(record))
            if drop is None:
                passed.append(record)
            else:
                blocked.append(record)
                output.drops.append((FIREWALL_STEP, record, drop))
        kept, others = select_alternatives(passed)
        if others:
            output.drop(TASK_STEP, others, Drop(Reason.not_selected, ("a better-scored alternative was kept",)))
        gaps = holes(kept, [*group.dropped, *blocked])
        exported, lost = apply_gap_policy(kept, gaps, self.params.on_gap)
        chain = tool_chain(exported)
        broken = chain.broken
        if broken:
            # A call without its reply (or a reply without its call) never goes out: it is a hole like any other.
            for record in exported:
                if record.id in broken:
                    output.drop(TASK_STEP, [record], Drop(Reason.broken_tool_chain, (broken[record.id],)))
            gaps = sorted([*gaps, *(r for r in exported if r.id in broken)], key=Record.order_key)
            kept = [r for r in kept if r.id not in broken]
            exported, lost = apply_gap_policy(kept, gaps, self.params.on_gap)
            chain = tool_chain(exported)
        if not any(is_assistant(r) for r in exported):
            self._drop_unanswered(kept, gaps, output)
            return
        self._drop_after_gap(lost, gaps, output)
        if self.params.max_tokens is not None:
            budgeted = self._within_budget(exported, output)
            if not budgeted:
                return
            if len(budgeted) < len(exported):
                exported, chain = budgeted, tool_chain(budgeted)
        output.examples.append(self._example(exported, chain, group.key))

    def _build_plain_conversation(self, group: Group, output: TaskOutput) -> None:
        """`_build_conversation` in one pass, for a conversation of plain turns (`plain_turns`) and no token budget:
        the same example and drops. With no group_id every turn that passes the firewall is kept, with no tool turn
        there is no chain to pair, and of the holes only the first counts: it ends the turns `on_gap=cut` exports,
        and the drops name it. Most logged conversations are plain; this pass takes ~1 µs a record less than the
        general one's (bench/RESULTS.md)."""
        firewall, allowed = self.firewall, self.firewall.allowed
        kept: list[Record] = []
        first_hole = group.dropped[0] if group.dropped else None  # `group_records` sorts the dropped turns
        for record in group.records:
            # An allowed category passes without the call: the verdict of most turns.
            drop = None if record.category in allowed else firewall.check(record, completion=record.role is _ASSISTANT)
            if drop is None:
                kept.append(record)
                continue
            output.drops.append((FIREWALL_STEP, record, drop))
            if first_hole is None or record.order_key() < first_hole.order_key():
                first_hole = record
        gaps = [first_hole] if first_hole is not None else []
        exported, lost = apply_gap_policy(kept, gaps, self.params.on_gap)
        if not any(record.role is _ASSISTANT for record in exported):
            self._drop_unanswered(kept, gaps, output)
            return
        self._drop_after_gap(lost, gaps, output)
        output.examples.append(self._example(exported, NO_TOOL_CHAIN, group.key))

    def _example(self, turns: Sequence[Record], chain: ToolChain | None, group_key: str) -> Example:
        """The line of the turns a conversation exports: their messages and, when any is scored, the best reward."""
        rewards = [r.reward for r in turns if r.reward is not None]
        body = {"messages": self._messages(turns, chain)}
        if rewards:
            body["reward"] = max(rewards)
        return make_example("sft", body, turns, group_key)

    def _messages(self, turns: Sequence[Record], chain: ToolChain | None = None) -> list[dict]:
        """The turns as the line's messages: tool calls with their ids, replies with theirs, reasoning if asked.
        `chain`: the turns' tool chain, when the caller has it already."""
        chain = chain if chain is not None else tool_chain(turns)
        return [message(r, chain, include_reasoning=self.params.include_reasoning) for r in turns]

    def _within_budget(self, turns: list[Record], output: TaskOutput) -> list[Record]:
        """The turns that fit `max_tokens`: all of them, the longest prefix ending in an assistant turn that fits
        (`cut`), or none (`drop`, or nothing fits); the rest are quarantined as `too_long`."""
        budget = TokenBudget(self.params.max_tokens, self.tokenizer)  # type: ignore[arg-type]
        try:
            total = budget.count(self._messages(turns))
            kept: list[Record] = turns if total <= budget.max_tokens else []
            if not kept and self.params.on_overflow == "cut":
                # Only after an assistant turn that calls no tool: no call goes out without its reply.
                ends = [i + 1 for i, r in enumerate(turns[:-1]) if is_assistant(r) and not r.tool_calls]
                for end in reversed(ends):
                    if budget.count(self._messages(turns[:end])) <= budget.max_tokens:
                        kept = turns[:end]
                        break
        except TemplateError as error:
            why = f"the tokenizer's chat template refuses this conversation: {error}"
            output.drop(TASK_STEP, turns, Drop(Reason.schema_violation, (why,)))
            return []
        if len(kept) < len(turns):
            how = "cut after the last assistant turn that fits" if kept else "dropped: no assistant turn fits"
            if self.params.on_overflow == "drop":
                how = "dropped (task.on_overflow=drop)"
            why = f"{total} tokens ({budget.method}) > task.max_tokens={budget.max_tokens}; {how}"
            output.drop(TASK_STEP, turns[len(kept):], Drop(Reason.too_long, (why,)))
        return kept

    def _drop_after_gap(self, records: Sequence[Record], gaps: Sequence[Record], output: TaskOutput) -> None:
        if records:
            why = f"turn {gaps[0].id} was dropped earlier (task.on_gap={self.params.on_gap})"
            output.drop(TASK_STEP, records, Drop(Reason.after_gap, (why,)))

    def _drop_unanswered(self, kept: Sequence[Record], gaps: Sequence[Record], output: TaskOutput) -> None:
        """No example: turns that had no assistant reply to train on are `no_assistant_turn`, the rest `after_gap`."""
        if gaps and self.params.on_gap != "keep":
            head = [r for r in kept if r.order_key() < gaps[0].order_key()]
        else:
            head = list(kept)
        if any(is_assistant(r) for r in head):
            self._drop_after_gap(kept, gaps, output)
            return
        output.drop(TASK_STEP, head, Drop(Reason.no_assistant_turn, ("conversation has no assistant turn",)))
        self._drop_after_gap(kept[len(head) :], gaps, output)

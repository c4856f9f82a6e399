from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import ValidationInfo, field_validator

from distill.grouping import Group
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Category, Record
from distill.tasks.base import FIREWALL_STEP, TASK_STEP, TASKS, Task, TaskOutput, TaskParams, make_example
from distill.tasks.conversation import (
    Firewall,
    GapPolicy,
    apply_gap_policy,
    holes,
    is_assistant,
    message,
    select_alternatives,
    tool_chain,
)
from distill.tasks.instruction import InstructionBuilder, checked_fallback_template, checked_templates


class SftParams(TaskParams):
    format: Literal["chat", "instruction"] = "chat"
    include_partial: bool = False
    # What a partially_accepted assistant turn (let in by include_partial) is: trained on, or context only (kept
    # in the conversation, masked from the loss by the flavours that can: openai `weight: 0`, axolotl `train`).
    partial_turns: Literal["train", "context"] = "train"
    on_gap: GapPolicy = "cut"
    # format=chat: add each assistant turn's reasoning to its message (`reasoning_content`).
    include_reasoning: bool = False
    # format=instruction only: source stem -> template (or templates, first fully known wins), and the rest.
    templates: dict[str, str | list[str]] = {}
    fallback_template: str = "Source '{stem}' run; produce the appropriate output for this task type."
    instructable_roles: tuple[str, ...] = ("executor", "reviewer", "applier")
    quality_scores: dict[str, float] = {}

    _templates_use_known_fields = field_validator("templates")(checked_templates)

    @field_validator("partial_turns")
    @classmethod
    def _context_needs_partial_chat_turns(cls, value: str, info: ValidationInfo) -> str:
        if value == "context" and info.data.get("format") == "instruction":
            raise ValueError("context turns are turns of a conversation: use it with task.format=chat")
        if value == "context" and not info.data.get("include_partial"):
            raise ValueError("only partially_accepted turns can be context: set task.include_partial=true too")
        return value
    _fallback_always_renders = field_validator("fallback_template")(checked_fallback_template)


@TASKS.register("sft")
class SftTask(Task):
    """Chat SFT (`format: chat`): one `{"messages": [...]}` line per conversation (a group's records in
    (created_at, id) order). Instruction SFT (`format: instruction`): one `{instruction, context, response}` line per
    record, see `distill.tasks.instruction`.

    Firewall (`unsafe_sft_category`): a rejected or needs_human_review record never reaches a line;
    partially_accepted only with `include_partial`. Of alternatives sharing a group_id only the best stays
    (`not_selected`). A tool call without its reply, or a reply without its call, is `broken_tool_chain` and
    leaves a hole; a dropped turn leaves a hole handled by `on_gap` (`after_gap`); a conversation without an
    assistant turn is no example (`no_assistant_turn`). Tool calls carry their ids (derived when the log has none)
    and tool messages the `tool_call_id` they answer; reasoning goes out only with `include_reasoning`.
    """

    kind = "sft"
    Params = SftParams
    params: SftParams

    def __init__(self, params: SftParams) -> None:
        super().__init__(params)
        allowed = {Category.accepted} | ({Category.partially_accepted} if params.include_partial else set())
        self.firewall = Firewall(frozenset(allowed), Reason.unsafe_sft_category, params.require_category)
        self.schema = "sft_instruction_line" if params.format == "instruction" else "sft_chat_line"

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        if self.params.format == "instruction":
            self._instruction_builder().build(groups, output)
            return output
        for group in groups:
            self._build_conversation(group, output)
        return output

    def _instruction_builder(self) -> InstructionBuilder:
        params = self.params
        return InstructionBuilder(
            self.firewall, params.templates, params.fallback_template, params.instructable_roles, params.quality_scores
        )

    def _build_conversation(self, group: Group, output: TaskOutput) -> None:
        passed, blocked = [], []
        for record in group.records:
            drop = self.firewall.check(record, completion=is_assistant(record))
            if drop is None:
                passed.append(record)
            else:
                blocked.append(record)
                output.drops.append((FIREWALL_STEP, record, drop))
        kept, others = select_alternatives(passed)
        output.drop(TASK_STEP, others, Drop(Reason.not_selected, ("a better-scored alternative was kept",)))
        gaps = holes(kept, [*group.dropped, *blocked])
        exported, lost = apply_gap_policy(kept, gaps, self.params.on_gap)
        broken = tool_chain(exported).broken
        if broken:
            # A call without its reply (or a reply without its call) never goes out: it is a hole like any other.
            for record in exported:
                if record.id in broken:
                    output.drop(TASK_STEP, [record], Drop(Reason.broken_tool_chain, (broken[record.id],)))
            gaps = sorted([*gaps, *(r for r in exported if r.id in broken)], key=Record.order_key)
            kept = [r for r in kept if r.id not in broken]
            exported, lost = apply_gap_policy(kept, gaps, self.params.on_gap)
        if not any(is_assistant(r) for r in exported):
            self._drop_unanswered(kept, gaps, output)
            return
        self._drop_after_gap(lost, gaps, output)
        rewards = [r.reward for r in exported if r.reward is not None]
        chain = tool_chain(exported)
        reasoning = self.params.include_reasoning
        body = {"messages": [message(r, chain, include_reasoning=reasoning) for r in exported]}
        if rewards:
            body["reward"] = max(rewards)
        output.examples.append(make_example("sft", body, exported, group.key))

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

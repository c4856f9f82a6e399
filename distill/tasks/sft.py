from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import field_validator

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
)


class SftParams(TaskParams):
    # Kept only to point the old flag at its own task: instruction SFT is `task=sft_instruction`.
    format: Literal["chat", "instruction"] = "chat"
    include_partial: bool = False
    on_gap: GapPolicy = "cut"

    @field_validator("format")
    @classmethod
    def _instruction_is_its_own_task(cls, value: str) -> str:
        if value == "instruction":
            raise ValueError("instruction SFT is its own task now: use task=sft_instruction")
        return value


@TASKS.register("sft")
class SftTask(Task):
    """Chat SFT: one `{"messages": [...]}` line per conversation (a group's records in (created_at, id) order).
    Instruction SFT is its own task, `sft_instruction` (`distill.tasks.instruction`).

    Firewall (`unsafe_sft_category`): a rejected or needs_human_review record never reaches a line;
    partially_accepted only with `include_partial`. Of alternatives sharing a group_id only the best stays
    (`not_selected`). A dropped turn leaves a hole handled by `on_gap` (`after_gap`); a conversation without an
    assistant turn is no example (`no_assistant_turn`).
    """

    kind = "sft"
    Params = SftParams
    params: SftParams
    schema = "sft_chat_line"

    def __init__(self, params: SftParams) -> None:
        super().__init__(params)
        allowed = {Category.accepted} | ({Category.partially_accepted} if params.include_partial else set())
        self.firewall = Firewall(frozenset(allowed), Reason.unsafe_sft_category, params.require_category)

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        for group in groups:
            self._build_conversation(group, output)
        return output

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
        if not any(is_assistant(r) for r in exported):
            self._drop_unanswered(kept, gaps, output)
            return
        self._drop_after_gap(lost, gaps, output)
        rewards = [r.reward for r in exported if r.reward is not None]
        body = {"messages": [message(r) for r in exported]}
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

"""The `rollout` task: one line per prompt with its sampled responses and their rewards (PPO/GRPO/RLVR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill.grouping import Group
from distill.record import Record
from distill.tasks.base import TASKS, Task, TaskOutput, TaskParams, make_example
from distill.tasks.candidates import candidate_firewall, read_group
from distill.tasks.conversation import message


class RolloutParams(TaskParams):
    # Add each assistant turn's reasoning to its message (`reasoning_content`).
    include_reasoning: bool = False


@TASKS.register("rollout")
class RolloutTask(Task):
    """RL rollouts: `{"prompt", "responses": [{"messages", "reward", "reward_source"}], "group_id"}` per group.

    The prompt and candidates are read as for preference data (`distill.tasks.candidates`); every candidate is a
    response, in (created_at, id) order, rewarded or not (`reward` null: the trainer scores it online).
    `group_id` is the first response's group_id (null when none has one); `ground_truth` is the prompt's (the last
    prompt record that has one), left out when none has. Groups without a candidate are
    `no_assistant_turn`, without a prompt `not_instructable`, with a hole in the prompt `after_gap`.
    """

    kind = "rollout"
    schema = "rollout_line"
    Params = RolloutParams
    params: RolloutParams

    def __init__(self, params: RolloutParams) -> None:
        super().__init__(params)
        self.firewall = candidate_firewall(params.require_category)

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        for group in groups:
            conversation = read_group(group, self.firewall, output)
            if conversation is None:
                continue
            body = {
                "prompt": conversation.prompt_messages(include_reasoning=self.params.include_reasoning),
                "responses": [_response(c, self.params.include_reasoning) for c in conversation.candidates],
                "group_id": next((c.group_id for c in conversation.candidates if c.group_id is not None), None),
            }
            truths = [r.ground_truth for r in conversation.prompt if r.ground_truth is not None]
            if truths:
                body["ground_truth"] = truths[-1]  # a column TRL's GRPO hands to reward functions by name
            output.examples.append(make_example("rollout", body, conversation.records, group.key))
        return output


def _response(candidate: Record, include_reasoning: bool) -> dict[str, Any]:
    sent = message(candidate, include_reasoning=include_reasoning)
    return {"messages": [sent], "reward": candidate.reward, "reward_source": candidate.reward_source}

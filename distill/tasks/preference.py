"""The `preference` task: paired, unpaired and ranked preference lines from rewards, labels and ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator

from distill.grouping import Group
from distill.record import Label, Record
from distill.tasks.category_pairing import build_category_pairs
from distill.tasks.base import TASKS, Task, TaskOutput, TaskParams, make_example
from distill.tasks.candidates import (
    PromptAndCandidates,
    best_first,
    candidate_firewall,
    drop_unused,
    drop_without_signal,
    preference_score,
    read_group,
)
from distill.tasks.conversation import message

Form = Literal["paired", "unpaired", "ranked"]
LINE_SCHEMAS: dict[str, str] = {
    "paired": "preference_paired_line",
    "unpaired": "preference_unpaired_line",
    "ranked": "preference_ranked_line",
}
CATEGORY_LINE_SCHEMA = "preference_category_line"


class PreferenceParams(TaskParams):
    form: Form = "paired"
    pairing: Literal["score", "category"] = "score"
    pairs: Literal["best_worst", "all"] = "best_worst"
    min_margin: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    max_pairs_per_group: PositiveInt = 5
    min_reward: float | None = Field(default=None, allow_inf_nan=False)
    # Add each assistant turn's reasoning to its message (`reasoning_content`).
    include_reasoning: bool = False

    @field_validator("pairing")
    @classmethod
    def _category_pairing_is_paired(cls, pairing: str, info: ValidationInfo) -> str:
        if pairing == "category" and info.data.get("form", "paired") != "paired":
            raise ValueError("category pairing writes paired lines: use it with task.form=paired")
        return pairing


@TASKS.register("preference")
class PreferenceTask(Task):
    """Preference data from one group's prompt and its scored candidates (see `distill.tasks.candidates`).

    Score: label chosen beats any reward, label rejected loses to any reward, else the reward; a candidate with
    neither is unscored. `form`:
    - `paired` (DPO/SimPO/ORPO): `{"prompt", "chosen", "rejected"}`, chosen the best-scored candidate, rejected
      the worst (`pairs=best_worst`), or every pair whose score gap exceeds `min_margin`, best chosen first, at
      most `max_pairs_per_group` (`pairs=all`). Ties never make a pair.
    - `unpaired` (KTO): `{"prompt", "completion", "label"}` per candidate with a label, or with a reward when
      `min_reward` is set (label = reward >= min_reward).
    - `ranked`: `{"prompt", "candidates": [{"messages", "rank", "reward"}]}`, best first: by explicit `rank`
      when candidates have one, else by score; a missing rank is written as the position.
    A group that yields no line is `no_pair_signal` (and counted in `insufficient_pair_groups`); candidates left
    out of the lines of a group that yielded some are `unused_candidate`. `pairing=category` hands each group to
    the category pairing (`distill.tasks.category_pairing`) instead.
    """

    kind = "preference"
    Params = PreferenceParams
    params: PreferenceParams

    def __init__(self, params: PreferenceParams) -> None:
        super().__init__(params)
        self.firewall = candidate_firewall(params.require_category)
        self.category_pairs = build_category_pairs if params.pairing == "category" else None

    def _message(self, record: Record) -> dict[str, Any]:
        return message(record, include_reasoning=self.params.include_reasoning)

    @property
    def schema(self) -> str:  # type: ignore[override]
        return CATEGORY_LINE_SCHEMA if self.params.pairing == "category" else LINE_SCHEMAS[self.params.form]

    @property
    def form(self) -> str:
        return self.params.form

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        build_lines = {"paired": self._paired, "unpaired": self._unpaired, "ranked": self._ranked}[self.params.form]
        for group in groups:
            if self.category_pairs is not None:
                if not self.category_pairs(group, max_pairs_per_group=self.params.max_pairs_per_group, output=output):
                    output.counts["insufficient_pair_groups"] += 1
                continue
            conversation = read_group(group, self.firewall, output)
            if conversation is not None:
                build_lines(conversation, group.key, output)
        return output

    def _separated(self, better: Record, worse: Record) -> bool:
        return preference_score(better) > preference_score(worse) + self.params.min_margin

    def _pairs(self, ranked: Sequence[Record]) -> list[tuple[Record, Record]]:
        if len(ranked) < 2:
            return []
        if self.params.pairs == "best_worst":
            return [(ranked[0], ranked[-1])] if self._separated(ranked[0], ranked[-1]) else []
        pairs = [
            (chosen, rejected)
            for chosen in ranked
            for rejected in reversed(ranked)
            if self._separated(chosen, rejected)
        ]
        return pairs[: self.params.max_pairs_per_group]

    def _paired(self, conversation: PromptAndCandidates, group_key: str, output: TaskOutput) -> None:
        pairs = self._pairs(best_first(conversation.candidates))
        lines = [
            ({"chosen": [self._message(chosen)], "rejected": [self._message(rejected)]}, [chosen, rejected])
            for chosen, rejected in pairs
        ]
        _write_lines(
            "paired", conversation, lines, group_key, output,
            no_signal=f"fewer than two scored candidates, or no gap above task.min_margin={self.params.min_margin}",
            unused=f"unscored, or in no pair of this group (task.pairs={self.params.pairs})",
            reasoning=self.params.include_reasoning,
        )

    def _desirable(self, candidate: Record) -> bool | None:
        """KTO's label: the record's own label, else its reward against `min_reward`; None when neither says."""
        if candidate.label is not None:
            return candidate.label is Label.chosen
        if candidate.reward is None or self.params.min_reward is None:
            return None
        return candidate.reward >= self.params.min_reward

    def _unpaired(self, conversation: PromptAndCandidates, group_key: str, output: TaskOutput) -> None:
        labelled = [(candidate, self._desirable(candidate)) for candidate in conversation.candidates]
        lines = [
            ({"completion": [self._message(candidate)], "label": label}, [candidate])
            for candidate, label in labelled
            if label is not None
        ]
        min_reward = self.params.min_reward
        _write_lines(
            "unpaired", conversation, lines, group_key, output,
            no_signal=f"no candidate has a label, or a reward to compare with task.min_reward={min_reward}",
            unused=f"neither a label nor a reward comparable with task.min_reward={min_reward}",
            reasoning=self.params.include_reasoning,
        )

    def _ranked(self, conversation: PromptAndCandidates, group_key: str, output: TaskOutput) -> None:
        ordered = sorted(
            (c for c in conversation.candidates if c.rank is not None or preference_score(c) is not None),
            key=_rank_order,
        )
        explicit = any(c.rank is not None for c in ordered)
        lines = []
        if len(ordered) >= 2 and (explicit or self._separated(ordered[0], ordered[-1])):
            candidates = [_ranked_candidate(self._message(c), c, position) for position, c in enumerate(ordered, start=1)]
            lines.append(({"candidates": candidates}, ordered))
        _write_lines(
            "ranked", conversation, lines, group_key, output,
            no_signal="fewer than two ranked or scored candidates, or all scores tied",
            unused="neither a rank, a label nor a reward",
            reasoning=self.params.include_reasoning,
        )


def _write_lines(
    prefix: str,
    conversation: PromptAndCandidates,
    lines: Sequence[tuple[dict[str, Any], Sequence[Record]]],
    group_key: str,
    output: TaskOutput,
    *,
    no_signal: str,
    unused: str,
    reasoning: bool = False,
) -> None:
    """One example per (fields, completion records) after the shared prompt; with none, the group has no signal."""
    if not lines:
        drop_without_signal(conversation, no_signal, output)
        return
    prompt = conversation.prompt_messages(include_reasoning=reasoning)
    for fields, completions in lines:
        body = {"prompt": prompt, **fields}
        output.examples.append(make_example(prefix, body, [*conversation.prompt, *completions], group_key))
    drop_unused(conversation.candidates, [r for _, completions in lines for r in completions], unused, output)


def _rank_order(candidate: Record) -> tuple[Any, ...]:
    """Explicit ranks first (1 = best), then by score, best first; ties by (created_at, id)."""
    score = preference_score(candidate)
    by_score = -score if score is not None else math.inf
    return (candidate.rank is None, candidate.rank or 0, by_score, candidate.order_key())


def _ranked_candidate(sent: dict[str, Any], candidate: Record, position: int) -> dict[str, Any]:
    return {
        "messages": [sent],
        "rank": candidate.rank if candidate.rank is not None else position,
        "reward": candidate.reward,
    }

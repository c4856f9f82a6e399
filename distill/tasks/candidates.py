"""Prompt and candidates: how preference and rollout tasks read one group's conversation.

Within a group (records in (created_at, id) order) every non-assistant record is prompt context: the leading ones
form the prompt, and one that follows a candidate (a tool result, say) stays in the prompt context too. Every
assistant record is a candidate answer to that prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distill.grouping import Group
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Category, Label, Record
from distill.tasks.base import FIREWALL_STEP, TASK_STEP, TaskOutput
from distill.tasks.conversation import Firewall, is_assistant, message


@dataclass(frozen=True)
class PromptAndCandidates:
    """One group read as a prompt (its non-assistant records) and the candidate answers (its assistant records)."""

    prompt: tuple[Record, ...]
    candidates: tuple[Record, ...]

    @property
    def records(self) -> tuple[Record, ...]:
        return (*self.prompt, *self.candidates)

    def prompt_messages(self, *, include_reasoning: bool = False) -> list[dict[str, Any]]:
        return [message(r, include_reasoning=include_reasoning) for r in self.prompt]


def preference_score(record: Record) -> float | None:
    """Label chosen beats any reward, label rejected loses to any reward, else the reward; None when unscored."""
    if record.label is Label.chosen:
        return math.inf
    if record.label is Label.rejected:
        return -math.inf
    return record.reward


def best_first(candidates: Sequence[Record]) -> list[Record]:
    """Scored candidates, highest score first; ties by (created_at, id)."""
    scored = [r for r in candidates if preference_score(r) is not None]
    return sorted(scored, key=lambda r: (-preference_score(r), r.order_key()))


def candidate_firewall(require_category: bool) -> Firewall:
    """Score-based tasks take a candidate of any category (its score says how good it is); only a missing
    category can be refused, with `task.require_category=true`."""
    return Firewall(frozenset(Category), Reason.category_disallowed, require_category)


def read_group(group: Group, firewall: Firewall, output: TaskOutput) -> PromptAndCandidates | None:
    """The group as prompt and candidates, or None after quarantining all of it when it cannot be one.

    Refused candidates go to the firewall's quarantine. The whole group goes when curation removed a prompt
    turn (`after_gap`: a prompt never goes out with a hole in it), when no candidate is left
    (`no_assistant_turn`) or when there is no prompt (`not_instructable`).
    """
    prompt, candidates = [], []
    for record in group.records:
        if not is_assistant(record):
            prompt.append(record)
            continue
        drop = firewall.check(record)
        if drop is None:
            candidates.append(record)
        else:
            output.drops.append((FIREWALL_STEP, record, drop))
    holes = [r for r in group.dropped if not is_assistant(r)]
    if holes:
        why = f"prompt turn {holes[0].id} was dropped earlier, so the prompt would have a hole"
        output.drop(TASK_STEP, [*prompt, *candidates], Drop(Reason.after_gap, (why,)))
        return None
    if not candidates:
        output.drop(TASK_STEP, prompt, Drop(Reason.no_assistant_turn, ("the group has no assistant candidate",)))
        return None
    if not prompt:
        why = "the group has no prompt: every record is an assistant candidate"
        output.drop(TASK_STEP, candidates, Drop(Reason.not_instructable, (why,)))
        return None
    return PromptAndCandidates(tuple(prompt), tuple(candidates))


def drop_unused(candidates: Sequence[Record], used: Sequence[Record], why: str, output: TaskOutput) -> None:
    """Candidates of a group that did yield lines, left out of all of them: `unused_candidate`."""
    used_ids = {r.id for r in used}
    unused = [r for r in candidates if r.id not in used_ids]
    output.drop(TASK_STEP, unused, Drop(Reason.unused_candidate, (why,)))


def drop_without_signal(group: PromptAndCandidates, why: str, output: TaskOutput) -> None:
    """A group that gives no line: all its records are `no_pair_signal`, and the group is counted."""
    output.drop(TASK_STEP, group.records, Drop(Reason.no_pair_signal, (why,)))
    output.counts["insufficient_pair_groups"] += 1

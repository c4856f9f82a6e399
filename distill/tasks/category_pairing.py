"""Task `preference_category`: preference pairs from categories, within one group accepted over rejected.

Every accepted record is paired with every rejected one; when that yields no valid pair, accepted with
partially_accepted. Pairs never cross groups (the function sees one group), never put a record (or run) against
itself (`self_pairing`) and never pair identical or empty texts (`invalid_preference_pairing`). At most
`max_pairs_per_group` pairs, in (chosen, rejected) record order.

Records that end in no pair: an empty text is `invalid_preference_pairing`; in a group that pairs, the rest are
`unused_candidate` (left out by the cap, identical text, no opposing category); in a group that yields no pair, a
record whose candidate pairs were all invalid carries that reason, the others `no_pair_signal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import PositiveInt

from distill.grouping import Group, display_key
from distill.hashing import normalize_text
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Category, Record
from distill.tasks.base import TASK_STEP, TASKS, Task, TaskOutput, TaskParams, make_example
from distill.tasks.instruction import upstream_provenance

PAIR_PREFIX = "pref"
RATIONALE_CHARS = 80
# Which category a chosen accepted record is paired against, in order of preference.
OPPONENT_TIERS = (Category.rejected, Category.partially_accepted)


@dataclass(frozen=True)
class Candidate:
    """A possible (chosen, rejected) pair and, when it may not be used, why."""

    chosen: Record
    rejected: Record
    invalid: Reason | None


def has_text(record: Record) -> bool:
    return bool(record.text and not record.text.isspace())


def pair_problem(chosen: Record, rejected: Record) -> Reason | None:
    """Why two records may not form a pair, or None."""
    if chosen.id == rejected.id or (chosen.run_id is not None and chosen.run_id == rejected.run_id):
        return Reason.self_pairing
    if not has_text(chosen) or not has_text(rejected):
        return Reason.invalid_preference_pairing
    if normalize_text(chosen.text or "") == normalize_text(rejected.text or ""):
        return Reason.invalid_preference_pairing
    return None


def candidates(records: list[Record], opponent: Category) -> list[Candidate]:
    chosen_side = [r for r in records if r.category is Category.accepted]
    rejected_side = [r for r in records if r.category is opponent]
    return [Candidate(c, r, pair_problem(c, r)) for c in chosen_side for r in rejected_side]


def first_rationale(record: Record) -> str:
    reasons = record.metadata.get("reasons")
    if isinstance(reasons, list) and reasons and reasons[0] not in (None, ""):
        return str(reasons[0])[:RATIONALE_CHARS]
    return "no rationale logged"


def pair_prompt(chosen: Record, rejected: Record, group: Group) -> str:
    task = chosen.task_id or rejected.task_id or display_key(group.key)
    files = chosen.source_files or rejected.source_files
    return f"Task: {task}" + (f" · file={files[0]}" if files else "")


def pair_line(chosen: Record, rejected: Record, group: Group) -> dict[str, Any]:
    chosen_category, rejected_category = chosen.category.value, rejected.category.value  # type: ignore[union-attr]
    reason = (
        f"chosen is {chosen_category} ({first_rationale(chosen)}); "
        f"rejected is {rejected_category} ({first_rationale(rejected)})"
    )
    return {
        "prompt": [{"role": "user", "content": pair_prompt(chosen, rejected, group)}],
        "chosen": [{"role": "assistant", "content": chosen.text}],
        "rejected": [{"role": "assistant", "content": rejected.text}],
        "reason": reason,
        "chosen_run_id": chosen.run_id or chosen.id,
        "rejected_run_id": rejected.run_id or rejected.id,
        "provenance": {
            "chosen_category": chosen_category,
            "rejected_category": rejected_category,
            "sig_hashes": [upstream_provenance(r).get("sig_hash") for r in (chosen, rejected)],
        },
    }


def unused_reason(record: Record, tried: list[Candidate], paired: bool) -> Drop:
    """Why a record of the group ended in no pair (see the module docstring for the rules)."""
    if not has_text(record):
        return Drop(Reason.invalid_preference_pairing, ("empty text cannot be a preference side",))
    if paired:
        return Drop(Reason.unused_candidate, ("the group paired, but no pair used this record",))
    problems = [c.invalid for c in tried if record.id in (c.chosen.id, c.rejected.id)]
    if problems and all(problems):
        if Reason.self_pairing in problems:
            return Drop(Reason.self_pairing, ("its only candidate pairs set a run against itself",))
        return Drop(Reason.invalid_preference_pairing, ("its only candidate pairs had identical or empty texts",))
    return Drop(Reason.no_pair_signal, ("the group has no accepted record with a rejected or partial opposite",))


def build_category_pairs(group: Group, *, max_pairs_per_group: int, output: TaskOutput) -> bool:
    """Appends the group's pairs and the drops of its other records to `output`; True when it yielded a pair."""
    tried: list[Candidate] = []
    chosen_pairs: list[Candidate] = []
    for opponent in OPPONENT_TIERS:
        tier = candidates(group.records, opponent)
        tried.extend(tier)
        chosen_pairs = [c for c in tier if c.invalid is None][:max_pairs_per_group]
        if chosen_pairs:
            break
    for pair in chosen_pairs:
        line = pair_line(pair.chosen, pair.rejected, group)
        output.examples.append(make_example(PAIR_PREFIX, line, [pair.chosen, pair.rejected], group.key))
    used = {r.id for pair in chosen_pairs for r in (pair.chosen, pair.rejected)}
    paired = bool(chosen_pairs)
    for record in group.records:
        if record.id not in used:
            output.drops.append((TASK_STEP, record, unused_reason(record, tried, paired)))
    return paired


class PreferenceCategoryParams(TaskParams):
    max_pairs_per_group: PositiveInt = 5


@TASKS.register("preference_category")
class PreferenceCategoryTask(Task):
    """Paired preference lines `{prompt, chosen, rejected, reason, chosen_run_id, rejected_run_id}` by category,
    written to `preference.*` (see the module docstring for the pairing and the reasons). Its natural group is the
    task (`group=task_id`, the task config's default). A group with no pair counts as `insufficient_pair_groups`."""

    kind = "preference_category"
    Params = PreferenceCategoryParams
    params: PreferenceCategoryParams
    schema = "preference_category_line"

    @property
    def output_name(self) -> str:
        return "preference"

    @property
    def form(self) -> str:
        return "paired"

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        for group in groups:
            if not build_category_pairs(group, max_pairs_per_group=self.params.max_pairs_per_group, output=output):
                output.counts["insufficient_pair_groups"] += 1
        return output

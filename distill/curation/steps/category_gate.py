from __future__ import annotations

from collections.abc import Sequence

from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Category, Record
from distill.curation.steps.base import STEPS, RecordStep, StepParams, Verdict


class CategoryGateParams(StepParams):
    allowed: tuple[Category, ...] = (Category.accepted,)
    allow_missing: bool = True
    roles: tuple[str, ...] | None = None


@STEPS.register("category_gate")
class CategoryGate(RecordStep):
    """Drops records whose category is not in `allowed` (`category_disallowed`), optionally only for some `roles`.
    This is a curation choice on top of the task's own firewall, which no chain edit can remove."""

    kind = "category_gate"
    Params = CategoryGateParams
    reasons = (Reason.category_disallowed,)
    params: CategoryGateParams

    def map_batch(self, batch: Sequence[Record]) -> list[Verdict]:
        allowed = set(self.params.allowed)
        roles = set(self.params.roles) if self.params.roles is not None else None
        verdicts: list[Verdict] = []
        for record in batch:
            in_scope = roles is None or (record.role is not None and record.role.value in roles)
            if not in_scope or record.category in allowed or (record.category is None and self.params.allow_missing):
                verdicts.append(record)
            else:
                category = record.category.value if record.category else "missing"
                verdicts.append(Drop(Reason.category_disallowed, (f"category {category} not in {sorted(allowed)}",)))
        return verdicts

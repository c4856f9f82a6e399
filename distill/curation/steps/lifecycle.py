from __future__ import annotations

from collections.abc import Sequence

from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import LifecycleStatus, Record
from distill.curation.steps.base import STEPS, RecordStep, StepParams, Verdict

RETIRED_STATUSES = (
    LifecycleStatus.tombstoned,
    LifecycleStatus.expired,
    LifecycleStatus.retired,
    LifecycleStatus.superseded,
    LifecycleStatus.contradicted,
)


class LifecycleParams(StepParams):
    statuses: tuple[LifecycleStatus, ...] = RETIRED_STATUSES
    superseded_by_id_means_superseded: bool = True


@STEPS.register("lifecycle")
class Lifecycle(RecordStep):
    """Drops records whose lifecycle says they no longer hold (`lifecycle`): tombstoned, expired, retired,
    superseded or contradicted by default, and any record that names a `superseded_by_id`, since a newer record
    replaced it even when its status was never updated."""

    kind = "lifecycle"
    Params = LifecycleParams
    reasons = (Reason.lifecycle,)
    params: LifecycleParams

    def map_batch(self, batch: Sequence[Record]) -> list[Verdict]:
        statuses = set(self.params.statuses)
        check_successor = self.params.superseded_by_id_means_superseded
        verdicts: list[Verdict] = []
        for record in batch:
            if record.lifecycle_status in statuses:
                verdicts.append(Drop(Reason.lifecycle, (f"lifecycle_status is {record.lifecycle_status.value}",)))
            elif check_successor and record.superseded_by_id:
                verdicts.append(Drop(Reason.lifecycle, (f"superseded by {record.superseded_by_id}",)))
            else:
                verdicts.append(record)
        return verdicts

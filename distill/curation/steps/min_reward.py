from __future__ import annotations

from collections.abc import Sequence

from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import STEPS, RecordStep, StepParams, Verdict


class MinRewardParams(StepParams):
    threshold: float = 0.0


@STEPS.register("min_reward")
class MinReward(RecordStep):
    """Drops records whose reward is present and below `threshold` (`below_min_reward`): rejection sampling.
    Records without a reward are kept; other steps and the task decide about them."""

    kind = "min_reward"
    Params = MinRewardParams
    reasons = (Reason.below_min_reward,)
    params: MinRewardParams

    def map_batch(self, batch: Sequence[Record]) -> list[Verdict]:
        threshold = self.params.threshold
        return [
            Drop(Reason.below_min_reward, (f"reward {record.reward} < {threshold}",))
            if record.reward is not None and record.reward < threshold
            else record
            for record in batch
        ]

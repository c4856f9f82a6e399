from __future__ import annotations

from collections.abc import Sequence

from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import STEPS, RecordStep, StepParams, Verdict


class NonEmptyTextParams(StepParams):
    allow_tool_calls_without_text: bool = True


@STEPS.register("non_empty_text")
class NonEmptyText(RecordStep):
    """Drops records with no text or only whitespace (`empty_content`): there is nothing to train on or retrieve.
    An assistant turn that only calls tools is kept by default, since its `tool_calls` are the content."""

    kind = "non_empty_text"
    Params = NonEmptyTextParams
    reasons = (Reason.empty_content,)
    params: NonEmptyTextParams

    def map_batch(self, batch: Sequence[Record]) -> list[Verdict]:
        allow_calls = self.params.allow_tool_calls_without_text
        verdicts: list[Verdict] = []
        for record in batch:
            if (record.text and not record.text.isspace()) or (allow_calls and record.tool_calls):
                verdicts.append(record)
            else:
                verdicts.append(Drop(Reason.empty_content, ("text is empty",)))
        return verdicts

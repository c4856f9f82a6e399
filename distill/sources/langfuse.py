"""Langfuse observation exports: `GENERATION` observations from the API listing (JSON) or an export (Parquet,
JSONL)."""

from __future__ import annotations

from typing import Any

from distill.record import Role
from distill.sources.base import SOURCES
from distill.sources.langsmith import (
    TraceExportSource,
    chat_turn,
    feedback_fields,
    generation_turns,
    input_turns,
    json_column,
)
from distill.sources.messages import Call, Turn, leftovers, require_dict

# The API lists observations in camelCase; blob-storage exports write the same fields in snake_case.
_ALIASES = {
    "traceId": "trace_id", "sessionId": "session_id", "startTime": "start_time", "usageDetails": "usage_details",
}
_READ = ("id", "type", "input", "output", "scores", "usage", *_ALIASES, *_ALIASES.values())


def _get(row: dict[str, Any], key: str) -> Any:
    value = row.get(key)
    return row.get(_ALIASES[key]) if value is None and key in _ALIASES else value


def _answers(output: Any) -> list[Turn]:
    """A generation's output: a message, text, a list of messages, or a logged provider response."""
    output = json_column(output)
    if isinstance(output, str):
        return [Turn(role=Role.assistant.value, text=output)]
    if isinstance(output, list):
        return [chat_turn(m, f"output[{i}]") for i, m in enumerate(output)]
    if isinstance(output, dict) and ("choices" in output or "generations" in output):
        return generation_turns(output)
    return [chat_turn({"role": "assistant", **require_dict(output, "output")}, "output")]


def _scores(scores: Any) -> dict[str, float]:
    """[{name, value, dataType}] (or {name: value}) -> {name: numeric value}; booleans as 1 / 0."""
    scores = json_column(scores)
    if isinstance(scores, dict):
        scores = [{"name": k, "value": v} for k, v in scores.items()]
    found = {}
    for score in scores if isinstance(scores, list) else []:
        if isinstance(score, dict) and isinstance(score.get("name"), str):
            value = score.get("value")
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)):
                found[score["name"]] = value
    return found


@SOURCES.register("langfuse")
class LangfuseSource(TraceExportSource):
    """Langfuse observations: the API listing (`{"data": [...]}` or a list, as JSON), one observation per JSONL
    line, or an export (Parquet; camelCase or snake_case keys). Observations of type `GENERATION` are calls; spans
    and events are skipped and counted in the manifest input's `skipped`.

    `input` (a message list, `{messages}` or text) is the history, `output` the answer; `id` is the answer's
    `run_id`, `startTime` its time, `usageDetails.output` (or `usage.output`) its `tokens_used`. `scores`
    (`[{name, value}]`, when the export joins them) give the reward (`source.reward_key`, or the only score) and the
    label (`source.label_key`); the session is `sessionId`, else the trace id. Model, parameters, metadata, cost
    and the other keys land in metadata.
    """

    kind = "langfuse"
    listing_keys = ("data",)
    type_key = "type"
    call_type = "GENERATION"

    def call(self, row: dict[str, Any]) -> Call:
        outputs = _answers(row.get("output"))
        usage = json_column(_get(row, "usageDetails")) or json_column(row.get("usage")) or {}
        tokens = usage.get("output") if isinstance(usage, dict) else None
        fields: dict[str, Any] = {"run_id": str(row["id"]) if row.get("id") is not None else None}
        if len(outputs) == 1 and isinstance(tokens, int):
            fields["tokens_used"] = tokens
        fields.update(feedback_fields(_scores(row.get("scores")), self.params.reward_key, self.params.label_key))
        metadata = {key: json_column(value) for key, value in leftovers(row, _READ).items()}
        for key in ("usage", "scores"):
            if row.get(key) is not None:
                metadata[key] = json_column(row[key])
        if usage:
            metadata["usage_details"] = usage
        conversation = _get(row, "sessionId") or _get(row, "traceId")
        return Call(
            messages=input_turns(row.get("input"), "input"),
            outputs=outputs,
            conversation=str(conversation) if conversation else None,
            created_at=_get(row, "startTime"),
            fields={k: v for k, v in fields.items() if v is not None},
            metadata=metadata,
        )

"""OpenTelemetry GenAI spans, as OTLP JSON exports them (`resourceSpans` -> `scopeSpans` -> `spans`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from datetime import datetime, timedelta, timezone

import orjson

from distill.record import Role
from distill.sources.base import SOURCES
from distill.sources.chatlog import ChatLogSource
from distill.sources.messages import (
    Call,
    FormatError,
    PartKinds,
    Rejected,
    Skipped,
    Turn,
    leftovers,
    per_item,
    require_dict,
    require_list,
    role_of,
    split_parts,
    text_of,
)
from distill.sources.openai_chat import openai_turn

INFERENCE_OPERATIONS = {"chat", "text_completion", "generate_content"}
# The older form: one span event per message (semantic conventions before gen_ai.input/output.messages).
EVENT_ROLES = {
    "gen_ai.system.message": Role.system.value,
    "gen_ai.user.message": Role.user.value,
    "gen_ai.assistant.message": Role.assistant.value,
    "gen_ai.tool.message": Role.tool.value,
}
CHOICE_EVENT = "gen_ai.choice"
# Span attributes the source reads; every other attribute lands in metadata.
_READ = {
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions", "gen_ai.conversation.id",
    "gen_ai.response.id", "gen_ai.usage.output_tokens",
}


def any_value(value: Any) -> Any:
    """An OTLP JSON AnyValue as a Python value (int64 values come as text in OTLP JSON)."""
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes(items: Any) -> dict[str, Any]:
    return {a["key"]: any_value(a.get("value")) for a in items or [] if isinstance(a, dict) and "key" in a}


def structured(value: Any, what: str) -> Any:
    """A structured attribute: recorded as JSON text by most SDKs, or as OTLP arrays/maps."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as error:
            raise FormatError(f"{what} is not JSON ({error})") from None
    return value


PARTS = PartKinds(
    text=("text", "content"),
    reasoning=("reasoning", "content"),
    call=("tool_call", "id", "name", "arguments"),
    reply=("tool_call_response", "id", "response"),
)


def part_turns(message: Any, where: str) -> list[Turn]:
    """One semantic-convention message {role, parts, name?, finish_reason?} as turns: `text` parts its text,
    `tool_call` parts its tool calls, `reasoning` parts its reasoning; each `tool_call_response` part a tool turn.
    Other parts (blobs, uris, files) stay in `metadata.parts`."""
    message = require_dict(message, where)
    role = role_of(message.get("role"))
    parts = split_parts(message.get("parts"), PARTS, f"{where}.parts")
    metadata = leftovers(message, ("role", "parts"))
    if parts.others:
        metadata["parts"] = parts.others
    if parts.replies and not parts.texts and not parts.calls:
        return parts.replies
    turn = Turn(role=role, text="".join(parts.texts) if parts.texts else None, tool_calls=parts.calls or None,
                reasoning="\n".join(parts.reasoning) if parts.reasoning else None, metadata=metadata)
    return [*parts.replies, turn]


def _event_body(event: dict[str, Any]) -> dict[str, Any]:
    """An event's body: a `body` / `gen_ai.event.content` attribute holding it, else its attributes, JSON text
    values decoded."""
    attrs = attributes(event.get("attributes"))
    for key in ("body", "gen_ai.event.content"):
        if key in attrs:
            body = structured(attrs[key], f"event {event.get('name')}.{key}")
            return body if isinstance(body, dict) else {"content": body}
    decoded = {}
    for key, value in attrs.items():
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        decoded[key] = value
    return decoded


def event_turns(events: list[Any]) -> tuple[list[Turn], list[Turn]]:
    """(input turns, output turns) from the older per-message span events; a `gen_ai.choice` is an answer."""
    inputs, outputs = [], []
    for event in events:
        name = event.get("name") if isinstance(event, dict) else None
        if name in EVENT_ROLES:
            body = _event_body(event)
            message = {**body, "role": EVENT_ROLES[name]}
            if name == "gen_ai.tool.message" and "tool_call_id" not in message:
                message["tool_call_id"] = body.get("id")
                message.pop("id", None)
            inputs.append(openai_turn(message, f"event {name}"))
        elif name == CHOICE_EVENT:
            body = _event_body(event)
            message = body.get("message") if isinstance(body.get("message"), dict) else {}
            turn = openai_turn({"role": "assistant", **message}, "event gen_ai.choice")
            turn.metadata.update(leftovers(body, ("message",)))
            outputs.append(turn)
    return inputs, outputs


def spans(line: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(resource attributes, scope, span) for every span of an OTLP traces document."""
    for resource_spans in require_list(line.get("resourceSpans"), "resourceSpans"):
        resource = attributes(((resource_spans or {}).get("resource") or {}).get("attributes"))
        for scope_spans in (resource_spans or {}).get("scopeSpans") or []:
            scope = (scope_spans or {}).get("scope") or {}
            for span in (scope_spans or {}).get("spans") or []:
                yield resource, scope, require_dict(span, "span")


@SOURCES.register("otel_genai")
class OtelGenAiSource(ChatLogSource):
    """OpenTelemetry GenAI inference spans in OTLP JSON (the file exporter's one `{"resourceSpans": [...]}` per
    line, or a JSON document of it). A line holds spans of many traces; each inference span (`gen_ai.operation.name`
    chat, text_completion or generate_content) is a call: `gen_ai.system_instructions` and `gen_ai.input.messages`
    its history, `gen_ai.output.messages` its answers (several: alternatives), or the older per-message span
    events (`gen_ai.user.message`, ..., `gen_ai.choice`). The session is `gen_ai.conversation.id`, else the trace
    id; `gen_ai.response.id` is the answer's `run_id`, `gen_ai.usage.output_tokens` its `tokens_used`, the span start
    its time. Other spans (tools, agents) are skipped and counted in the manifest input's `skipped`; the span's
    other attributes, the resource's and the scope name land in metadata.
    """

    kind = "otel_genai"

    def calls(self, item: Any) -> Iterable[Call | Skipped | Rejected]:
        item = require_dict(item, "the line")
        return per_item(spans(item), lambda found: [self._span_call(*found)])

    def _span_call(self, resource: dict[str, Any], scope: dict[str, Any], span: dict[str, Any]) -> Call | Skipped:
        attrs = attributes(span.get("attributes"))
        operation = attrs.get("gen_ai.operation.name")
        events = span.get("events") or []
        has_events = any(isinstance(e, dict) and (e.get("name") in EVENT_ROLES or e.get("name") == CHOICE_EVENT) for e in events)
        if operation not in INFERENCE_OPERATIONS and not has_events:
            return Skipped(str(operation or "other"))
        where = f"span {span.get('spanId')}"
        if "gen_ai.input.messages" in attrs or "gen_ai.output.messages" in attrs:
            inputs: list[Turn] = []
            system = attrs.get("gen_ai.system_instructions")
            if system is not None:
                inputs.append(Turn(role=Role.system.value, text=text_of(_instructions(structured(system, where)))))
            for i, message in enumerate(require_list(structured(attrs.get("gen_ai.input.messages", []), where), where)):
                inputs.extend(part_turns(message, f"{where} input[{i}]"))
            outputs: list[Turn] = []
            for i, message in enumerate(require_list(structured(attrs.get("gen_ai.output.messages", []), where), where)):
                outputs.extend(part_turns(message, f"{where} output[{i}]"))
        else:
            inputs, outputs = event_turns(events)
        tokens = attrs.get("gen_ai.usage.output_tokens")
        metadata = {key: value for key, value in attrs.items() if key not in _READ}
        metadata.update({f"resource.{key}": value for key, value in resource.items()})
        metadata.update(leftovers(span, ("attributes", "events", "startTimeUnixNano", "endTimeUnixNano")))
        if scope.get("name"):
            metadata["scope"] = scope["name"]
        return Call(
            messages=inputs,
            outputs=outputs,
            conversation=attrs.get("gen_ai.conversation.id") or span.get("traceId"),
            created_at=_nanoseconds(span.get("startTimeUnixNano")),
            fields={
                k: v
                for k, v in {"run_id": attrs.get("gen_ai.response.id"), "tokens_used": tokens if len(outputs) == 1 else None}.items()
                if v is not None
            },
            metadata=metadata,
        )


def _instructions(value: Any) -> Any:
    """gen_ai.system_instructions: a list of parts ({type: text, content}), or text."""
    if isinstance(value, list):
        return "".join(p.get("content") or "" for p in value if isinstance(p, dict) and p.get("type") == "text")
    return value


def _nanoseconds(value: Any) -> datetime | None:
    """OTLP's startTimeUnixNano (text or number) as an exact UTC time (to the microsecond)."""
    if value in (None, "", 0, "0"):
        return None
    try:
        micros = int(value) // 1000
    except (TypeError, ValueError):
        raise FormatError(f"startTimeUnixNano {value!r} is not a number") from None
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)

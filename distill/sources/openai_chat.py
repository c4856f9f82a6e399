"""OpenAI Chat Completions logs: request/response pairs, and Batch API output lines."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from distill.errors import DistillError
from distill.record import Role
from distill.sources.base import SOURCES
from distill.sources.chatlog import ChatLogParams, ChatLogSource
from distill.sources.files import numbered_lines, resolve_files, with_compression
from distill.sources.messages import (
    Call,
    FormatError,
    Turn,
    leftovers,
    require_dict,
    require_list,
    role_of,
    text_of,
    tool_call,
)

# Message roles of other names: `developer` is the newer name of `system`; `function` the legacy tool reply.
ROLE_ALIASES = {"developer": Role.system.value, "function": Role.tool.value}
_MESSAGE_KEYS = ("role", "content", "tool_calls", "function_call", "tool_call_id", "name", "reasoning_content", "reasoning")
# Where gateways put the conversation a call belongs to: the line itself, or the request's `metadata`.
CONVERSATION_KEYS = ("conversation_id", "session_id", "thread_id")


def openai_turn(message: Any, where: str) -> Turn:
    """One Chat Completions message (request or response) as a turn. Content parts other than text stay in
    `metadata.content_parts`; a tool reply's `name`, an assistant's tool calls (or legacy `function_call`) and its
    `reasoning_content` / `reasoning` (DeepSeek, vLLM, OpenRouter) are kept apart."""
    message = require_dict(message, where)
    role = role_of(message.get("role"), ROLE_ALIASES)
    metadata = leftovers(message, _MESSAGE_KEYS)
    content = message.get("content")
    if isinstance(content, list):
        others = [part for part in content if not (isinstance(part, dict) and part.get("type") == "text")]
        if others:
            metadata["content_parts"] = others
    calls = [
        tool_call(call.get("id"), (call.get("function") or {}).get("name"), (call.get("function") or {}).get("arguments"))
        for call in require_list(message.get("tool_calls") or [], f"{where}.tool_calls")
        if isinstance(call, dict)
    ]
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append(tool_call(None, legacy.get("name"), legacy.get("arguments")))
    name = message.get("name") if isinstance(message.get("name"), str) else None
    if name is not None and role != Role.tool.value:
        metadata["name"] = name  # a participant's name, not a tool's
        name = None
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return Turn(
        role=role,
        text=text_of(content),
        tool_calls=calls or None,
        tool_call_id=message.get("tool_call_id"),
        name=name,
        reasoning=reasoning if isinstance(reasoning, str) else None,
        metadata=metadata,
    )


def conversation_of(*places: Any) -> str | None:
    for place in places:
        if isinstance(place, dict):
            for key in CONVERSATION_KEYS:
                if place.get(key) not in (None, ""):
                    return str(place[key])
    return None


def completion_call(request: dict[str, Any], response: dict[str, Any], line: dict[str, Any], consumed: tuple[str, ...]) -> Call:
    """A request (create params) and its chat.completion: the messages sent, each choice an answer."""
    messages = require_list(request.get("messages"), "request.messages")
    choices = require_list(response.get("choices"), "response.choices")
    outputs = []
    for index, choice in enumerate(choices):
        choice = require_dict(choice, f"response.choices[{index}]")
        turn = openai_turn(choice.get("message"), f"response.choices[{index}].message")
        extra_choice = leftovers(choice, ("message", "index"))
        turn.metadata.update(extra_choice)
        if len(choices) > 1:
            turn.metadata["choice_index"] = choice.get("index", index)
        outputs.append(turn)
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    fields: dict[str, Any] = {"run_id": response.get("id")}
    if len(outputs) == 1 and isinstance(usage.get("completion_tokens"), int):
        fields["tokens_used"] = usage["completion_tokens"]
    metadata = leftovers(line, (*consumed, *CONVERSATION_KEYS))
    request_rest = leftovers(request, ("messages",))
    response_rest = leftovers(response, ("choices", "id", "created"))
    if request_rest:
        metadata["request"] = request_rest
    if response_rest:
        metadata["response"] = response_rest
    return Call(
        messages=[openai_turn(m, f"request.messages[{i}]") for i, m in enumerate(messages)],
        outputs=outputs,
        conversation=conversation_of(line, request.get("metadata")),
        created_at=response.get("created"),
        fields={k: v for k, v in fields.items() if v is not None},
        metadata=metadata,
    )


class OpenAiChatParams(ChatLogParams):
    requests: str | None = None
    """Batch API input files (a file, directory or glob): the requests Batch output lines answer, by custom_id."""


@SOURCES.register("openai_chat")
class OpenAiChatSource(ChatLogSource):
    """OpenAI Chat Completions logs, one call per line: `{"request": {messages, tools, model, ...}, "response":
    {id, created, choices: [{message, finish_reason}], usage}, ...}`, or a Batch API output line
    `{custom_id, response: {status_code, body: <chat.completion>}, error}` whose request is read from
    `source.requests` (the batch input file, `{custom_id, body: {messages, ...}}` per line).

    Each choice is an answer (several: alternatives sharing a group_id); `usage.completion_tokens` is the answer's
    `tokens_used` (one choice only: with n > 1 the usage is the sum); `response.id` its `run_id`; `created` the
    call's time. The conversation is `conversation_id` / `session_id` / `thread_id` of the line or of
    `request.metadata`, else the one whose opening the call repeats. A failed batch request (`error`, or a status
    other than 200) and a line of neither shape are `schema_violation`.
    """

    kind = "openai_chat"
    Params = OpenAiChatParams
    params: OpenAiChatParams

    def check(self) -> None:
        super().check()
        self.requests: dict[str, dict[str, Any]] = {}
        if self.params.requests is not None:
            _, files = resolve_files(self.params.requests, "source.requests", with_compression((".jsonl",)))
            for path in files:
                self._index_requests(path)

    def _index_requests(self, path: Path) -> None:
        for line, origin in numbered_lines(path, path.name, [], key="source.requests"):
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise DistillError(f"source.requests: {path}:{origin.line}: not JSON ({error})") from None
            if isinstance(row, dict) and isinstance(row.get("body"), dict) and row.get("custom_id") is not None:
                self.requests.setdefault(str(row["custom_id"]), row["body"])

    def calls(self, item: Any) -> Iterable[Call]:
        item = require_dict(item, "the line")
        if "custom_id" in item and "request" not in item:
            return [self._batch_call(item)]
        request = require_dict(item.get("request"), "request")
        response = require_dict(item.get("response"), "response")
        return [completion_call(request, response, item, ("request", "response"))]

    def _batch_call(self, item: dict[str, Any]) -> Call:
        custom_id = str(item["custom_id"])
        if item.get("error"):
            raise FormatError(f"batch request {custom_id} failed: {item['error']}")
        response = require_dict(item.get("response"), "response")
        if response.get("status_code") not in (None, 200):
            raise FormatError(f"batch request {custom_id} answered with status {response.get('status_code')}")
        request = self.requests.get(custom_id)
        if request is None:
            why = "no request for it in source.requests" if self.params.requests else "set source.requests"
            raise FormatError(f"batch output {custom_id}: the messages it answers are unknown ({why})")
        line = {**item, **leftovers(response, ("body", "status_code"))}
        return completion_call(request, require_dict(response.get("body"), "response.body"), line, ("response", "error"))

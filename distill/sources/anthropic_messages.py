"""Anthropic Messages API logs: request/response pairs whose content is a list of blocks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from distill.record import Role
from distill.sources.base import SOURCES
from distill.sources.chatlog import ChatLogSource
from distill.sources.messages import (
    Call,
    FormatError,
    PartKinds,
    Turn,
    leftovers,
    require_dict,
    require_list,
    split_parts,
    text_of,
)
from distill.sources.openai_chat import CONVERSATION_KEYS, conversation_of

TIME_KEYS = ("created_at", "timestamp", "time")


BLOCKS = PartKinds(
    text=("text", "text"),
    reasoning=("thinking", "thinking"),
    call=("tool_use", "id", "name", "input"),
    reply=("tool_result", "tool_use_id", "content"),
)


def _joined(texts: list[str]) -> str | None:
    return "\n".join(texts) if texts else None


def message_turns(message: Any, where: str) -> list[Turn]:
    """One Messages API message as turns. A user message's `tool_result` blocks are tool turns (in order, before
    its text); an assistant message is one turn: `text` blocks its text, `tool_use` its tool calls, `thinking` its
    reasoning. Other blocks (images, documents, redacted thinking) stay in `metadata.content_blocks`."""
    message = require_dict(message, where)
    role = message.get("role")
    if role not in (Role.user.value, Role.assistant.value):
        raise FormatError(f"{where}.role: {role!r} is neither user nor assistant")
    content = message.get("content")
    metadata = leftovers(message, ("role", "content"))
    if isinstance(content, str):
        return [Turn(role=role, text=content, metadata=metadata)]
    parts = split_parts(content, BLOCKS, f"{where}.content")
    if parts.others:
        metadata["content_blocks"] = parts.others
    if role == Role.user.value:
        user = [Turn(role=role, text=_joined(parts.texts), metadata=metadata)] if parts.texts or parts.others or not parts.replies else []
        return [*parts.replies, *user]
    return [Turn(role=role, text=_joined(parts.texts), tool_calls=parts.calls or None, reasoning=_joined(parts.reasoning),
                 metadata=metadata)]


@SOURCES.register("anthropic_messages")
class AnthropicMessagesSource(ChatLogSource):
    """Anthropic Messages API logs, one call per line: `{"request": {system, messages, tools, model, ...},
    "response": {id, content: [blocks], stop_reason, usage}, "created_at": ...}`.

    `system` (text or text blocks) is the system turn; content blocks map as in `message_turns`; the response is the
    answer: `usage.output_tokens` its `tokens_used`, `id` its `run_id`. The time is the line's `created_at` (or
    `timestamp`); the conversation is `conversation_id` / `session_id` / `thread_id` of the line or of
    `request.metadata`, else the one whose opening the call repeats.
    """

    kind = "anthropic_messages"

    def calls(self, item: Any) -> Iterable[Call]:
        item = require_dict(item, "the line")
        request = require_dict(item.get("request"), "request")
        response = require_dict(item.get("response"), "response")
        messages: list[Turn] = []
        system = request.get("system")
        if system is not None:
            messages.append(Turn(role=Role.system.value, text=text_of(system)))
        for index, message in enumerate(require_list(request.get("messages"), "request.messages")):
            messages.extend(message_turns(message, f"request.messages[{index}]"))
        answer = message_turns({"role": "assistant", "content": response.get("content")}, "response")
        usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
        fields = {"run_id": response.get("id"), "tokens_used": usage.get("output_tokens")}
        metadata = leftovers(item, ("request", "response", *CONVERSATION_KEYS, *TIME_KEYS))
        request_rest = leftovers(request, ("system", "messages"))
        response_rest = leftovers(response, ("content", "id", "role"))
        if request_rest:
            metadata["request"] = request_rest
        if response_rest:
            metadata["response"] = response_rest
        return [
            Call(
                messages=messages,
                outputs=answer,
                conversation=conversation_of(item, request.get("metadata")),
                created_at=next((item[key] for key in TIME_KEYS if item.get(key) is not None), None),
                fields={k: v for k, v in fields.items() if v is not None},
                metadata=metadata,
            )
        ]

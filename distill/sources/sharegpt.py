"""ShareGPT conversations: `{"conversations": [{"from", "value"}, ...]}`, one conversation per line."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from distill.record import Role
from distill.sources.base import SOURCES
from distill.sources.chatlog import ChatLogSource
from distill.sources.messages import Call, FormatError, Turn, leftovers, require_dict, require_list, tool_call

# `from` values -> roles. function_call / observation are LLaMA-Factory's tool call and tool result.
SPEAKERS = {
    "system": Role.system.value,
    "human": Role.user.value,
    "user": Role.user.value,
    "gpt": Role.assistant.value,
    "assistant": Role.assistant.value,
    "chatgpt": Role.assistant.value,
    "bing": Role.assistant.value,
    "bard": Role.assistant.value,
    "function_call": Role.assistant.value,
    "observation": Role.tool.value,
    "tool": Role.tool.value,
    "function": Role.tool.value,
}
THINK = re.compile(r"\A\s*<think>(.*?)</think>\s*", re.DOTALL)


def split_think(text: str) -> tuple[str, str | None]:
    """`<think>...</think>answer` (R1-style distilled data) -> (answer, reasoning)."""
    match = THINK.match(text)
    if match is None:
        return text, None
    return text[match.end():], match.group(1).strip()


def _calls(value: str) -> list[dict[str, Any]]:
    """A function_call turn's value: JSON text of one call `{name, arguments}` or of a list of them."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise FormatError(f"a function_call value is not JSON ({error})") from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    return [tool_call(c.get("id"), c.get("name"), c.get("arguments")) for c in calls if isinstance(c, dict)]


@SOURCES.register("sharegpt")
class ShareGptSource(ChatLogSource):
    """ShareGPT lines: `{"id"?, "system"?, "tools"?, "conversations": [{"from": human|gpt|system|function_call|
    observation, "value"}]}`.

    Each line is one conversation (its `id`, else the line). `function_call` values (JSON `{name, arguments}` or a
    list) are the tool calls of an assistant turn (joined to the gpt text right before them); `observation` turns
    are tool results, paired with the calls in order. A leading `<think>...</think>` in a gpt value is the turn's
    reasoning. A line's other keys (`tools`, a score, ...) land in the metadata of its first turn.
    """

    kind = "sharegpt"

    def calls(self, item: Any) -> Iterable[Call]:
        item = require_dict(item, "the line")
        conversation = item.get("conversations", item.get("conversation"))
        turns: list[Turn] = []
        if isinstance(item.get("system"), str) and item["system"]:
            turns.append(Turn(role=Role.system.value, text=item["system"]))
        for index, entry in enumerate(require_list(conversation, "conversations")):
            entry = require_dict(entry, f"conversations[{index}]")
            speaker = entry.get("from")
            role = SPEAKERS.get(speaker)
            value = entry.get("value")
            if role is None or not isinstance(value, str):
                raise FormatError(f"conversations[{index}]: unknown speaker {speaker!r} or a value that is not text")
            metadata = leftovers(entry, ("from", "value"))
            if speaker == "function_call":
                calls = _calls(value)
                previous = turns[-1] if turns else None
                if previous is not None and previous.role == role and not previous.tool_calls:
                    previous.tool_calls = calls
                else:
                    turns.append(Turn(role=role, tool_calls=calls, metadata=metadata))
                continue
            reasoning = None
            if role == Role.assistant.value:
                value, reasoning = split_think(value)
            turns.append(Turn(role=role, text=value, reasoning=reasoning, metadata=metadata))
        return [
            Call(
                messages=turns,
                outputs=[],
                conversation=item.get("id"),
                metadata=leftovers(item, ("id", "system", "conversations", "conversation")),
                standalone=True,
            )
        ]

"""`output.flavor=openai`: OpenAI fine-tuning files (chat-completions `messages`; DPO `input` / `preferred_output` /
`non_preferred_output`), checked line by line the way OpenAI's fine-tuning data checks do (the cookbook's "Chat
fine-tuning data prep" format checks, and the fine-tuning guide's rules for weights, tool calls and DPO), so a
file distill writes is not rejected at upload with no line number.

Provenance always goes to the sidecar: OpenAI reads only the keys below.
"""

from __future__ import annotations

import json
from typing import Any

from distill.output.flavours.base import (
    CATEGORY_PAIRED,
    PAIRED,
    SFT_CHAT,
    Flavour,
    FLAVOURS,
    Refused,
    RenderContext,
    trained_flags,
)
from distill.output.flavours.toolcalls import arguments_text, assign_call_ids, function_of
from distill.reasons import Reason
from distill.tasks.base import Example

# The keys OpenAI reads per role; anything else is an "unrecognized key" error.
ALLOWED_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "weight", "refusal"},
    "tool": {"role", "content", "tool_call_id"},
}
DEFAULT_MAX_EXAMPLE_TOKENS = 65_536


@FLAVOURS.register("openai")
class OpenAIFlavour(Flavour):
    name = "openai"
    shapes = frozenset({SFT_CHAT, PAIRED, CATEGORY_PAIRED})
    masks_turns = True
    inline_provenance = False
    file_format = "jsonl"

    def schema(self, shape: str) -> str | None:
        return "openai_chat_line" if shape == SFT_CHAT else "openai_preference_line"

    def render(self, example: Example, context: RenderContext) -> dict[str, Any]:
        line = example.line
        if context.shape == SFT_CHAT:
            flags = trained_flags(line, context) if context.partial_turns == "context" else None
            row: dict[str, Any] = {"messages": chat_messages(line["id"], line["messages"], flags)}
        else:
            messages = chat_messages(line["id"], [*line["prompt"], *line["chosen"], *line["rejected"]])
            cut = len(line["prompt"])
            row = {
                "input": {"messages": messages[:cut]},
                "preferred_output": messages[cut : cut + len(line["chosen"])],
                "non_preferred_output": messages[cut + len(line["chosen"]) :],
            }
        problems = line_problems(row, context)
        if problems:
            raise Refused(Reason.schema_violation, "openai: " + "; ".join(problems))
        return row


def chat_messages(example_id: str, messages: list[dict[str, Any]], trained: list[bool] | None = None) -> list[dict[str, Any]]:
    """TRL messages as OpenAI's: tool calls with ids and JSON-string arguments, tool turns with the id they
    answer, and `weight` 0/1 on assistant turns when some turn is context only."""
    call_ids, answers = assign_call_ids(example_id, messages)
    out = []
    for index, message in enumerate(messages):
        role = message["role"]
        rendered: dict[str, Any] = {"role": role}
        if role == "tool":
            rendered["content"] = message["content"]
            if answers[index] is not None:
                rendered["tool_call_id"] = answers[index]
        else:
            calls = message.get("tool_calls") or []
            if message["content"] or not calls:
                rendered["content"] = message["content"]
            if calls:
                rendered["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": function_of(call).get("name"), "arguments": arguments_text(function_of(call).get("arguments"))},
                    }
                    for call_id, call in zip(call_ids[index], calls)
                ]
        if trained is not None and role == "assistant":
            rendered["weight"] = int(trained[index])
        out.append(rendered)
    return out


def line_problems(row: Any, context: RenderContext | None = None) -> list[str]:
    """What OpenAI would reject in one line of a fine-tuning file ([] when nothing): SFT or DPO by its keys."""
    if not isinstance(row, dict):
        return ["a line must be a JSON object"]
    if "messages" in row:
        unknown = sorted(set(row) - {"messages", "tools", "parallel_tool_calls"})
        problems = [f"unrecognized top-level key {key!r}" for key in unknown]
        problems += _messages_problems(row["messages"], "messages")
        if isinstance(row["messages"], list) and not any(
            isinstance(m, dict) and m.get("role") == "assistant" and m.get("weight", 1) != 0 for m in row["messages"]
        ):
            problems.append("no trained assistant message (every assistant turn has weight 0, or there is none)")
        texts = _texts(row["messages"])
    elif "input" in row:
        unknown = sorted(set(row) - {"input", "preferred_output", "non_preferred_output"})
        problems = [f"unrecognized top-level key {key!r}" for key in unknown]
        given = row["input"] if isinstance(row["input"], dict) else {}
        problems += _messages_problems(given.get("messages"), "input.messages")
        texts = _texts(given.get("messages"))
        for key in ("preferred_output", "non_preferred_output"):
            output = row.get(key)
            if not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict) or output[0].get("role") != "assistant":
                problems.append(f"{key} must hold exactly one assistant message")
            else:
                problems += _messages_problems(output, key)
                texts += _texts(output)
    else:
        return ["a line needs `messages` (supervised) or `input` (DPO)"]
    if context is not None and context.token_counter is not None:
        limit = context.max_example_tokens or DEFAULT_MAX_EXAMPLE_TOKENS
        tokens = sum(context.token_counter(text) for text in texts)
        if tokens > limit:
            problems.append(f"{tokens} tokens, over the per-example limit of {limit}")
    return problems


def _messages_problems(messages: Any, where: str) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return [f"{where} must be a non-empty list"]
    problems: list[str] = []
    open_calls: set[str] = set()
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, dict):
            problems.append(f"{at} is not an object")
            continue
        role = message.get("role")
        if role not in ALLOWED_KEYS:
            problems.append(f"{at}: unrecognized role {role!r}")
            continue
        problems += [f"{at}: unrecognized key {key!r} for role {role}" for key in sorted(set(message) - ALLOWED_KEYS[role])]
        calls = message.get("tool_calls")
        content = message.get("content")
        if "content" not in message and not calls:
            problems.append(f"{at}: missing content")
        elif "content" in message and not isinstance(content, str):
            problems.append(f"{at}: content must be text")
        if "weight" in message and message["weight"] not in (0, 1):
            problems.append(f"{at}: weight must be 0 or 1")
        if role != "tool" and open_calls:
            problems.append(f"{at}: tool call(s) {sorted(open_calls)} have no tool message answering them")
            open_calls = set()
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_calls:
                problems.append(f"{at}: tool message answers no open tool call (tool_call_id {call_id!r})")
            else:
                open_calls.discard(call_id)
        if calls is not None:
            problems += _calls_problems(calls, at)
            open_calls = {c.get("id") for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str)}
    return problems


def _calls_problems(calls: Any, at: str) -> list[str]:
    if not isinstance(calls, list) or not calls:
        return [f"{at}: tool_calls must be a non-empty list"]
    problems = []
    ids = [call.get("id") if isinstance(call, dict) else None for call in calls]
    if len(set(ids)) != len(ids):
        problems.append(f"{at}: tool call ids repeat")
    for position, call in enumerate(calls):
        where = f"{at}.tool_calls[{position}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not call["id"]:
            problems.append(f"{where}: missing id")
        elif call.get("type") != "function" or not isinstance(function, dict):
            problems.append(f"{where}: must be {{type: function, function: {{name, arguments}}}}")
        elif not isinstance(function.get("name"), str) or not function["name"]:
            problems.append(f"{where}: missing function name")
        elif not isinstance(function.get("arguments"), str) or not _is_json(function["arguments"]):
            problems.append(f"{where}: arguments must be a JSON string")
    return problems


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _texts(messages: Any) -> list[str]:
    texts = []
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                texts.append(message["content"])
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    texts.append(f"{function.get('name')}({function.get('arguments')})")
    return texts


def file_problems(path: str) -> list[tuple[int, str]]:
    """Every problem of an OpenAI fine-tuning file as (line number, message): the write-time checks, for a file
    distill did not write (or to re-check one that was edited)."""
    problems = []
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            try:
                row = json.loads(text)
            except ValueError as error:
                problems.append((number, f"not JSON: {error}"))
                continue
            problems += [(number, problem) for problem in line_problems(row)]
    return problems

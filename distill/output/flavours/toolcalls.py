"""Tool calls in the shape chat-completions trainers read: an id per call, matched to the tool turn answering it,
and `arguments` as a JSON string.

Logs may carry their own call ids (`id` on a call, `tool_call_id` on a tool turn): those are kept. Where they
have none, the id is derived from the example id and the call's place, so it is the same on every rerun; a tool
turn is matched to the oldest unanswered call of the turn before it with the same function name (else the oldest
unanswered call). `assign_call_ids` is the one place to change when the logs' own ids are read upstream.
"""

from __future__ import annotations

from typing import Any

import orjson

from distill.hashing import sha256_hex


def arguments_text(arguments: Any) -> str:
    """A call's arguments as the JSON string OpenAI-style files hold (a string that is already JSON stays)."""
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments if arguments is not None else {}, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def derived_call_id(example_id: str, message_index: int, call_index: int) -> str:
    return "call_" + sha256_hex(f"{example_id}\x1f{message_index}\x1f{call_index}")[:24]


def function_of(call: dict[str, Any]) -> dict[str, Any]:
    """The {name, arguments} of a call in TRL's shape ({"type": "function", "function": {...}}) or a flat one."""
    function = call.get("function")
    return function if isinstance(function, dict) else call


def assign_call_ids(example_id: str, messages: list[dict[str, Any]]) -> tuple[list[list[str]], list[str | None]]:
    """(ids of each message's calls, the call id each tool message answers, None where no call is open)."""
    call_ids: list[list[str]] = []
    answers: list[str | None] = []
    open_calls: list[tuple[str, str | None]] = []  # (id, function name) of calls not answered yet
    for index, message in enumerate(messages):
        ids = []
        for position, call in enumerate(message.get("tool_calls") or []):
            call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
            ids.append(call_id or derived_call_id(example_id, index, position))
        call_ids.append(ids)
        if message.get("role") == "tool":
            answers.append(_answer(message, open_calls))
        else:
            answers.append(None)
            if ids:
                names = [function_of(call).get("name") for call in message["tool_calls"]]
                open_calls = list(zip(ids, names))
            elif message.get("role") in ("user", "assistant", "system"):
                open_calls = []
    return call_ids, answers


def _answer(message: dict[str, Any], open_calls: list[tuple[str, str | None]]) -> str | None:
    logged = message.get("tool_call_id")
    if isinstance(logged, str) and logged:
        for position, (call_id, _) in enumerate(open_calls):
            if call_id == logged:
                del open_calls[position]
        return logged
    if not open_calls:
        return None
    named = [i for i, (_, name) in enumerate(open_calls) if name is not None and name == message.get("name")]
    position = named[0] if named else 0
    return open_calls.pop(position)[0]

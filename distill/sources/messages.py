"""Messages as every chat-log format's parser produces them: a logged call (`Call`) made of turns (`Turn`), and the
helpers formats share to read message content, tool calls and content parts (a part map per format)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from distill.hashing import canonical_json, sha256_hex
from distill.record import Role

_ROLES = {role.value for role in Role}


class FormatError(ValueError):
    """A logged line (or one item of it) that is not the format: quarantined as `schema_violation`."""


@dataclass
class Turn:
    """One message, normalised: what every format's messages become."""

    role: str
    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        """What makes two logged copies the same turn (reasoning and metadata aside: providers drop them from the
        history they repeat)."""
        key = [self.role, self.text or "", self.tool_calls or [], self.tool_call_id, self.name]
        try:
            return sha256_hex(canonical_json(key))
        except orjson.JSONEncodeError as error:  # tool-call arguments nested deeper than orjson writes
            raise FormatError(f"a {self.role} message that cannot be hashed ({error})") from None


@dataclass
class Call:
    """One logged model call: the messages sent, the answer(s), and the fields the answer's records get."""

    messages: list[Turn]
    outputs: list[Turn]
    conversation: str | None = None
    created_at: Any = None
    fields: dict[str, Any] = field(default_factory=dict)
    """Record fields of the answers (run_id, tokens_used, reward, label, ...)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the call logged that no record field holds: lands in each answer's metadata."""
    standalone: bool = False
    """The line is a whole conversation of its own (a dataset row, not a logged call): its session is the line."""


@dataclass(frozen=True)
class Skipped:
    """An item of the log that is no model call (a chain or tool run, a span of another kind): counted, not a row."""

    kind: str


@dataclass(frozen=True)
class Rejected:
    """One item of a line that holds several (spans of an OTLP batch, runs of a listing page) that is not the format:
    quarantined alone (`schema_violation`), the line's other items still read."""

    why: str
    item: Any


# What a value of the wrong kind deep inside an item raises (RecursionError: one nested deeper than Python recurses,
# which orjson reads up to 1,024 levels; its text, repr or parts are read recursively).
WRONG_KIND = (ValueError, TypeError, AttributeError, KeyError, RecursionError)


def per_item(items: Iterable[Any], parse: Callable[[Any], Iterable[Call | Skipped | Rejected]]) -> list[Call | Skipped | Rejected]:
    """The calls of every item, an item that fails becoming `Rejected` instead of failing its whole line."""
    found: list[Call | Skipped | Rejected] = []
    for item in items:
        try:
            found.extend(parse(item))
        except FormatError as error:
            found.append(Rejected(str(error), item))
        except WRONG_KIND as error:
            found.append(Rejected(f"{type(error).__name__}: {error}", item))
    return found


def text_of(value: Any) -> str | None:
    """Message content as text: a string, or the text of a list of parts ({type: text, text|content})."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [text_of(part) for part in value]
        return "".join(t for t in texts if t) if any(t is not None for t in texts) else None
    if isinstance(value, dict):
        for key in ("text", "content"):
            if isinstance(value.get(key), str):
                return value[key]
        return None
    return str(value)


def decoded_arguments(arguments: Any) -> Any:
    """Tool-call arguments as an object when they are JSON text of one (chat templates render objects)."""
    if isinstance(arguments, str):
        try:
            value = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments
        return value if isinstance(value, dict) else arguments
    return arguments


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """A call in the OpenAI/TRL shape; no `id` key when the log has none (the task derives one)."""
    if not isinstance(name, str) or not name:
        raise FormatError(f"a tool call without a name: {name!r}")
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": decoded_arguments(arguments)}}
    if call_id not in (None, ""):
        call = {"id": str(call_id), **call}
    return call


def role_of(value: Any, aliases: dict[str, str] | None = None) -> str:
    role = (aliases or {}).get(value, value)
    if role not in _ROLES:
        raise FormatError(f"unknown message role {value!r}")
    return role


def leftovers(item: dict[str, Any], consumed: Iterable[str]) -> dict[str, Any]:
    """The keys of `item` a format does not read: they go to metadata, never lost."""
    used = set(consumed)
    return {key: value for key, value in item.items() if key not in used and value is not None}


def require_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{what} is not an object")
    return value


def require_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"{what} is not a list")
    return value


@dataclass(frozen=True)
class PartKinds:
    """How a format names the parts of a message (content blocks, OTel parts): the part `type` and the keys that
    hold what distill reads from it."""

    text: tuple[str, str]
    """(type, key of the text)"""
    reasoning: tuple[str, str]
    """(type, key of the reasoning text)"""
    call: tuple[str, str, str, str]
    """(type, key of the call id, of the tool name, of the arguments)"""
    reply: tuple[str, str, str]
    """(type, key of the id of the call answered, of the result)"""


@dataclass
class Parts:
    """A message's parts, sorted by what they are."""

    texts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    replies: list[Turn] = field(default_factory=list)
    others: list[Any] = field(default_factory=list)


def reply_text(value: Any) -> str:
    """A tool result as text: text (or text parts) as it is, anything else as JSON."""
    text = text_of(value)
    if text is not None:
        return text
    return orjson.dumps(value).decode() if value is not None else ""


def split_parts(parts: Any, kinds: PartKinds, where: str) -> Parts:
    """Sorts a message's parts: texts, reasoning, tool calls, tool replies (each a tool turn) and the rest."""
    found = Parts()
    for part in require_list(parts, where):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == kinds.text[0]:
            found.texts.append(part.get(kinds.text[1]) or "")
        elif kind == kinds.reasoning[0]:
            found.reasoning.append(part.get(kinds.reasoning[1]) or "")
        elif kind == kinds.call[0]:
            _, id_key, name_key, arguments_key = kinds.call
            found.calls.append(tool_call(part.get(id_key), part.get(name_key), part.get(arguments_key)))
        elif kind == kinds.reply[0]:
            _, id_key, result_key = kinds.reply
            extra = leftovers(part, ("type", id_key, result_key))
            found.replies.append(
                Turn(role=Role.tool.value, text=reply_text(part.get(result_key)), tool_call_id=part.get(id_key), metadata=extra)
            )
        else:
            found.others.append(part)
    return found

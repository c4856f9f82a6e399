"""What the chat-log sources share: logged model calls -> one record per conversation turn.

A provider or tracing log holds *calls*: the messages sent (the whole conversation so far) and the answer(s). Each
format turns a logged line into calls (`Call`, made of `Turn`s); `HistoryMerger` turns the calls of one file into
records:

- a turn repeated by later calls is one record: its identity is (conversation, position, content hash), chained
  over the turns before it, so the same text after another history is another turn;
- several answers after the same history (n > 1, a retried call) are alternatives sharing a `group_id`;
- the conversation is the log's own id when it has one, else the one whose opening (the turns up to the first user
  message) the call repeats, named after the line that first logged it;
- ids: `<conversation>#<position>:<hash8>` when the log names the conversation, else `<file>:<line>#<n>` (the line
  that first logged the turn, n its index in that call); positions are zero-padded to four digits so ids sort in
  turn order;
- created_at: when the conversation first reached the turn's position, each later position at least 1 µs later,
  so (created_at, id) is the conversation order even when the calls share a timestamp.

A file is one unit (calls of a conversation may be logged in any order within it). What a format does not map
lands in the record's `metadata`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import PositiveInt

from distill.errors import DistillError
from distill.hashing import canonical_json, sha256_hex
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin, Role, format_timestamp, parse_timestamp
from distill.sources.base import FileSource, Parsed, SourceParams
from distill.sources.files import (
    decode_line,
    file_sha256,
    numbered_lines,
    read_bytes,
    resolve_files,
    row_label,
    strip_compression,
    with_compression,
)

PARSE_STEP = "parse"
STEP = timedelta(microseconds=1)
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
        return sha256_hex(canonical_json(key))


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


# What a value of the wrong kind deep inside an item raises.
WRONG_KIND = (ValueError, TypeError, AttributeError, KeyError)


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


@dataclass
class _Node:
    """One turn of one conversation, however many calls repeated it."""

    id: str
    session: str
    position: int
    turn: Turn
    origin: Origin
    first_seen: datetime | None
    prefix: str
    fields: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class HistoryMerger:
    """The calls of one file -> one record row per distinct turn (see the module docstring)."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}
        self.openings: dict[str, str] = {}
        self.answers: dict[str, set[str]] = {}

    def add(self, call: Call, origin: Origin, first: int = 0) -> int:
        """Adds one call logged at `origin`; its turns are numbered from `first` within the line (a line may hold
        several calls). Returns the next number."""
        created = parse_timestamp(call.created_at)
        line_label = row_label(origin)
        session, named = self._session(call, line_label)
        chain = sha256_hex(f"conversation\x1f{session}")
        turns = [(turn, False) for turn in call.messages] + [(turn, True) for turn in call.outputs]
        inputs = len(call.messages)
        for n, (turn, is_output) in enumerate(turns):
            position = inputs if is_output else n
            prefix = chain
            key = sha256_hex(f"{prefix}\x1f{turn.content_hash()}")
            node = self.nodes.get(key)
            if node is None:
                node_id = f"{session}#{position:04d}:{key[:8]}" if named else f"{line_label}#{first + n:04d}"
                node = self.nodes[key] = _Node(node_id, session, position, turn, origin, created, prefix)
            else:
                node.first_seen = _earliest(node.first_seen, created)
                if turn.reasoning and not node.turn.reasoning:
                    node.turn = replace(node.turn, reasoning=turn.reasoning)
                for name, value in turn.metadata.items():
                    node.metadata.setdefault(name, value)
            if call.standalone and n == 0:
                for name, value in call.metadata.items():
                    node.metadata.setdefault(name, value)
            if is_output:
                for name, value in call.fields.items():
                    node.fields.setdefault(name, value)
                for name, value in call.metadata.items():
                    node.metadata.setdefault(name, value)
            else:
                chain = key
            if turn.role == Role.assistant.value:
                self.answers.setdefault(prefix, set()).add(key)
        return first + len(turns)

    def _session(self, call: Call, line_label: str) -> tuple[str, bool]:
        """(conversation id, whether the log named it)."""
        if call.conversation not in (None, ""):
            return str(call.conversation), True
        if call.standalone:
            return line_label, False
        opening = []
        for turn in [*call.messages, *call.outputs]:
            opening.append(turn.content_hash())
            if turn.role == Role.user.value:
                break
        key = sha256_hex("\x1f".join(opening))
        return self.openings.setdefault(key, line_label), False

    def rows(self) -> Iterator[tuple[dict[str, Any], Origin]]:
        """Every distinct turn as a row of record-field names, with the origin of the line that first logged it."""
        times = self._position_times()
        for key, node in self.nodes.items():
            turn = node.turn
            answers = self.answers.get(node.prefix, set())
            row: dict[str, Any] = {
                "id": node.id,
                "session_id": node.session,
                "created_at": format_timestamp(times.get((node.session, node.position))),
                "role": turn.role,
                "text": turn.text,
                "tool_calls": turn.tool_calls or None,
                "tool_call_id": turn.tool_call_id,
                "name": turn.name,
                "reasoning": turn.reasoning,
                "group_id": f"alt-{node.prefix[:16]}" if len(answers) > 1 and key in answers else None,
                **node.fields,
                "metadata": {**turn.metadata, **node.metadata} or None,
            }
            yield {name: value for name, value in row.items() if value is not None}, node.origin

    def _position_times(self) -> dict[tuple[str, int], datetime]:
        first: dict[tuple[str, int], datetime] = {}
        for node in self.nodes.values():
            if node.first_seen is not None:
                where = (node.session, node.position)
                first[where] = _earliest(first.get(where), node.first_seen)
        times: dict[tuple[str, int], datetime] = {}
        positions = sorted({(node.session, node.position) for node in self.nodes.values()})
        for session, position in positions:
            previous = times.get((session, position - 1))
            seen = first.get((session, position))
            if seen is None and previous is None:
                continue
            times[(session, position)] = max(t for t in (seen, previous + STEP if previous else None) if t is not None)
        return times


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return min(a, b)


class ChatLogParams(SourceParams):
    path: str
    batch_rows: PositiveInt = 4096


class ChatLogSource(FileSource):
    """A file source of logged calls: JSONL (one item per line), a JSON document (an API listing: its items) or,
    where the format has bulk exports, Parquet (one item per row), any of them compressed (Parquet aside)."""

    Params: ClassVar[type[SourceParams]] = ChatLogParams
    params: ChatLogParams
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl", ".json", ".ndjson")
    listing_keys: ClassVar[tuple[str, ...]] = ()
    """Keys of a JSON document that hold the listed items (`runs`, `data`)."""

    def check(self) -> None:
        plain = tuple(s for s in self.suffixes if s != ".parquet")
        suffixes = with_compression(plain) + ((".parquet",) if ".parquet" in self.suffixes else ())
        self.root, self.files = resolve_files(self.params.path, "source.path", suffixes)  # Parquet: never compressed

    @abstractmethod
    def calls(self, item: Any) -> Iterable[Call | Skipped | Rejected]:
        """The calls one logged item holds. Raises FormatError when the item is not the format."""

    def read_file(self, path: Path, relative: str) -> Iterator[Parsed]:
        """One file (a map shard: history merging needs all of it): its records, then what it held that is no
        record; appends its entry to the inputs."""
        merger = HistoryMerger()
        rejected: list[QuarantineRow] = []
        skipped: dict[str, int] = {}
        for origin, item in self._items(path, relative):
            row_id = row_label(origin)
            if isinstance(item, QuarantineRow):
                rejected.append(item)
                continue
            try:
                found = list(self.calls(item))
            except FormatError as error:
                rejected.append(QuarantineRow(PARSE_STEP, Reason.schema_violation, (str(error),), row_id, origin, item))
                continue
            except WRONG_KIND as error:  # a value of the wrong kind, deep inside
                why = f"not the {self.kind} format ({type(error).__name__}: {error})"
                rejected.append(QuarantineRow(PARSE_STEP, Reason.schema_violation, (why,), row_id, origin, item))
                continue
            numbered = 0
            for index, call in enumerate(found):
                if isinstance(call, Skipped):
                    skipped[call.kind] = skipped.get(call.kind, 0) + 1
                    continue
                if isinstance(call, Rejected):
                    rejected.append(QuarantineRow(
                        PARSE_STEP, Reason.schema_violation, (call.why,), f"{row_id}@{index}", origin, call.item
                    ))
                    continue
                try:
                    numbered = merger.add(call, origin, numbered)
                except ValueError as error:  # a bad timestamp
                    rejected.append(
                        QuarantineRow(PARSE_STEP, Reason.schema_violation, (str(error),), row_id, origin, item)
                    )
        for row, origin in merger.rows():
            yield self.to_record(row, origin, row["id"])
        yield from rejected
        if skipped:
            self._inputs[-1]["skipped"] = dict(sorted(skipped.items()))

    def _items(self, path: Path, relative: str) -> Iterator[tuple[Origin, Any]]:
        name = strip_compression(path.name)
        if name.endswith(".parquet"):
            yield from self._parquet_items(path, relative)
            return
        if name.endswith(".json"):
            document = _json_document(read_bytes(path, "source.path"))
            if document is not None:
                items = self._listed(document)
                self._inputs.append({"path": str(path.resolve()), "sha256": file_sha256(path), "rows": len(items)})
                for row, item in enumerate(items):
                    yield Origin(path=relative, row=row), item
                return
        for line, origin in numbered_lines(path, relative, self._inputs):
            yield origin, decode_line(line, origin, row_label(origin))

    def _listed(self, document: Any) -> list[Any]:
        if isinstance(document, list):
            return document
        if isinstance(document, dict):
            for key in self.listing_keys:
                if isinstance(document.get(key), list):
                    return document[key]
        return [document]

    def _parquet_items(self, path: Path, relative: str) -> Iterator[tuple[Origin, Any]]:
        from distill.sources.columnar import import_columnar, json_safe

        parquet = import_columnar("pyarrow.parquet", "source.kind")
        try:
            handle = parquet.ParquetFile(path)
        except (OSError, ValueError) as error:
            raise DistillError(f"source.path: {path} is not a readable Parquet file ({error})") from None
        row = 0
        with handle:
            for batch in handle.iter_batches(batch_size=self.params.batch_rows):
                for item in batch.to_pylist():
                    yield Origin(path=relative, row=row), json_safe(item)
                    row += 1
        self._inputs.append({"path": str(path.resolve()), "sha256": file_sha256(path), "rows": row})


def _json_document(data: bytes) -> Any:
    """The file as one JSON document (an API listing, pretty-printed or not), or None when it is JSON Lines."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None

"""History merging: the logged calls of one file -> one record per conversation turn.

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

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from distill.hashing import sha256_hex
from distill.record import Origin, Role, format_timestamp, parse_timestamp
from distill.sources.files import row_label
from distill.sources.messages import Call, Turn

STEP = timedelta(microseconds=1)
LAST = datetime.max.replace(tzinfo=timezone.utc)


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
        turns = [(turn, False) for turn in call.messages] + [(turn, True) for turn in call.outputs]
        # Every turn hashed before any is added: a turn that cannot be (FormatError) rejects the call whole.
        hashes = [turn.content_hash() for turn, _ in turns]
        line_label = row_label(origin)
        session, named = self._session(call, line_label)
        chain = sha256_hex(f"conversation\x1f{session}")
        inputs = len(call.messages)
        for n, ((turn, is_output), content) in enumerate(zip(turns, hashes)):
            position = inputs if is_output else n
            prefix = chain
            key = sha256_hex(f"{prefix}\x1f{content}")
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
            times[(session, position)] = max(t for t in (seen, _after(previous)) if t is not None)
        return times


def _after(previous: datetime | None) -> datetime | None:
    """The earliest time of the turn after one at `previous`: 1 µs later, or `previous` itself when that is the last
    time a datetime holds (a log dated 9999-12-31T23:59:59.999999Z: its turns share it, their ids keep the order)."""
    if previous is None:
        return None
    return previous + STEP if previous < LAST else previous


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return min(a, b)

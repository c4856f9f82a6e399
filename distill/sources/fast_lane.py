"""The JSON Lines fast lane: a line already in the record's own shape, read by msgspec straight into a
`StoredRecord`, with no pydantic object built (see bench/RESULTS.md for the figures).

The lane is only ever a shortcut. Its types are at least as strict as `Record`'s, so every line it takes is one
`Record` takes, giving the same values; every line it refuses (a numeric id, a key the record does not have, a
provenance, anything invalid) goes the full way, which gives the record or the quarantine row it always gave.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from distill.output.files import unwritable
from distill.record import (
    MAX_INT64, RECORD_FIELDS, VALUED_FIELDS, Category, Label, LifecycleStatus, Origin, Role, StoredRecord,
    parse_timestamp,
)

Text = str | None
NO_EMBEDDING = msgspec.Raw()


class RecordLine(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Every field of `Record` but `origin`, in its order, typed as strictly as pydantic validates it from JSON
    (`created_at` raw: `parse_timestamp` reads it, as the model's validator does; `embedding` as its JSON, which
    `fast_record` keeps or reads)."""

    id: Annotated[str, Meta(min_length=1)] | None = None
    run_id: Text = None
    session_id: Text = None
    task_id: Text = None
    external_id: Text = None
    tenant: Text = None
    source: Text = None
    bot_id: Text = None
    created_at: str | int | float | None = None
    role: Role | None = None
    text: Text = None
    category: Category | None = None
    reward: float | None = None
    reward_source: Text = None
    group_id: Text = None
    label: Label | None = None
    rank: Annotated[int, Meta(ge=1, le=MAX_INT64)] | None = None
    lifecycle_status: LifecycleStatus | None = None
    supersedes_id: Text = None
    superseded_by_id: Text = None
    embedding: msgspec.Raw = NO_EMBEDDING
    source_files: list[str] | None = None
    tokens_used: Annotated[int, Meta(ge=0, le=MAX_INT64)] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: Text = None
    name: Text = None
    reasoning: Text = None
    ground_truth: Text = None
    metadata: dict[str, Any] | None = None
    provenance: Any = None


assert RecordLine.__struct_fields__ + ("origin",) == RECORD_FIELDS, "RecordLine must follow Record's fields"


class TypedEmbeddingLine(RecordLine, forbid_unknown_fields=True, gc=False):
    """`RecordLine` with the embedding read as floats, every time its key appears."""

    embedding: list[float] | None = None  # type: ignore[assignment]


_typed_embedding_decoder = msgspec.json.Decoder(TypedEmbeddingLine)
_decoder = msgspec.json.Decoder(RecordLine)
_embedding_decoder = msgspec.json.Decoder(list[float])
_PLAIN_NUMBER_BYTES = b"0123456789.-, \t\n\r"
"""What an array of plain numbers holds between its brackets (JSON's syntax, which msgspec checked, does the rest)."""
_DIGITS_ONLY = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_TOO_MANY_DIGITS = b"0" * 309
"""An integer part this long may be beyond a float's range (msgspec refuses it; pydantic reads it as inf)."""


def embedding_kept_as_json(embedding: bytes) -> bool:
    """Whether an embedding's JSON (valid JSON: msgspec checked its syntax) is an array of plain numbers that every
    one fit a float, so reading it later cannot fail and gives what reading it now would: nothing but numbers, no
    exponent (which may overflow), no run of 309 digits (an integer part that may). The fast lane keeps such an array
    as its bytes (`StoredRecord.packed_embedding`) instead of building a list of floats that most runs never read:
    half the bench records carry 32 floats, ~1 µs of the map's ~13 a record to read, pack and free."""
    if embedding.translate(None, _PLAIN_NUMBER_BYTES) != b"[]":
        return False
    return len(embedding) < len(_TOO_MANY_DIGITS) or _TOO_MANY_DIGITS not in embedding.translate(_DIGITS_ONLY)


_values = msgspec.structs.astuple
_force_set = msgspec.structs.force_setattr


def fast_record(line: bytes, origin: Origin) -> Any | None:
    """The line as a `StoredRecord`, or None when it needs the full path. msgspec refuses what pydantic's JSON
    reading would take differently (numbers outside a float's range, NaN, a lone surrogate), so no value needs a
    second look but the free-form ones the writers bound (nesting, integers beyond 64 bits)."""
    # A line naming `origin` (the field the source sets) is refused as a key RecordLine does not have: the full path
    # moves it to metadata. (Looking for it in the line first cost ~2 µs a bench line, a tenth of the map.)
    # A line with a backslash may spell a key with escapes (`"embe\\u0064ding"`): it is read with its embedding
    # typed, as a whole. Any other is read with its embedding left as JSON (see below).
    typed = b"\\" in line
    try:
        row = (_typed_embedding_decoder if typed else _decoder).decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):  # RecursionError: nested past its depth
        return None
    if row.id is None or row.provenance is not None:
        return None
    if (row.metadata and unwritable(row.metadata)) or (row.tool_calls and unwritable(row.tool_calls)):
        return None
    created_at = None
    if row.created_at is not None:
        try:
            created_at = parse_timestamp(row.created_at)
        except ValueError:
            return None
    record = StoredRecord(*_values(row), origin, VALUED_FIELDS)
    # bytes: msgspec's Raw holds on to the whole line.
    if not typed and not _set_embedding_from_json(record, bytes(row.embedding), line):
        return None
    if created_at is not None:
        _force_set(record, "created_at", created_at)
    if row.metadata is None:
        _force_set(record, "metadata", {})
    return record


def _set_embedding_from_json(record: Any, embedding: bytes, line: bytes) -> bool:
    """Sets the embedding of a record whose line was read with it left as JSON (`embedding`, empty when the line has
    none): the array's own bytes in `packed_embedding` when it holds plain numbers (`embedding_kept_as_json`), else
    the list, read at once. False where that reading fails: the line is the full path's."""
    if not embedding or embedding == b"null":
        _force_set(record, "embedding", None)
        return True
    try:
        if line.count(b'"embedding"') != 1:
            # The key twice (or the word as a value): msgspec checked the copies a repeated key leaves behind only as
            # JSON (not their UTF-8, not their numbers' range), so the line is read again with every copy typed.
            _force_set(record, "embedding", _typed_embedding_decoder.decode(line).embedding)
        elif embedding_kept_as_json(embedding):
            _force_set(record, "embedding", None)
            _force_set(record, "packed_embedding", embedding)
        else:
            _force_set(record, "embedding", _embedding_decoder.decode(embedding))
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return False
    return True

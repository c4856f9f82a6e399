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


class RecordLine(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Every field of `Record` but `origin`, in its order, typed as strictly as pydantic validates it from JSON
    (`created_at` raw: `parse_timestamp` reads it, as the model's validator does)."""

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
    embedding: list[float] | None = None
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
_decoder = msgspec.json.Decoder(RecordLine)
_values = msgspec.structs.astuple
_force_set = msgspec.structs.force_setattr


def fast_record(line: bytes, origin: Origin) -> Any | None:
    """The line as a `StoredRecord`, or None when it needs the full path. msgspec refuses what pydantic's JSON
    reading would take differently (numbers outside a float's range, NaN, a lone surrogate), so no value needs a
    second look but the free-form ones the writers bound (nesting, integers beyond 64 bits)."""
    # A line naming `origin` (the field the source sets) is refused as a key RecordLine does not have: the full path
    # moves it to metadata. (Looking for it in the line first cost ~2 µs a bench line, a tenth of the map.)
    try:
        row = _decoder.decode(line)
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
    if created_at is not None:
        _force_set(record, "created_at", created_at)
    if row.metadata is None:
        _force_set(record, "metadata", {})
    return record

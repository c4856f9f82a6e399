"""The record model: one logged turn or run output, as every source yields it and every step sees it."""

from __future__ import annotations

import copyreg
import io
import pickle
from collections.abc import Sequence
from datetime import datetime, timezone
from enum import StrEnum
from operator import attrgetter
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, field_validator
from pydantic_core import core_schema


MAX_INT64 = 2**63 - 1
"""The largest integer a record field holds: what every writer (JSON, Parquet int64) can store."""


class Category(StrEnum):
    accepted = "accepted"
    partially_accepted = "partially_accepted"
    rejected = "rejected"
    needs_human_review = "needs_human_review"


class Label(StrEnum):
    chosen = "chosen"
    rejected = "rejected"


class Role(StrEnum):
    system = "system"
    user = "user"
    assistant = "assistant"
    tool = "tool"


class LifecycleStatus(StrEnum):
    active = "active"
    tombstoned = "tombstoned"
    expired = "expired"
    retired = "retired"
    superseded = "superseded"
    contradicted = "contradicted"


class Provenance(BaseModel):
    """Upstream lineage carried by the logs; checked by steps, never invented by distill."""

    model_config = ConfigDict(extra="allow", frozen=True)

    source_file: str | None = None
    line_offset: int | None = Field(default=None, strict=True, ge=-MAX_INT64 - 1, le=MAX_INT64)
    sig_hash: str | None = None


class Origin(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Where distill read the row: a file relative to the source root and its line, or a store uri/version/row.

    A msgspec struct, not a pydantic model: every record carries one, made per row read, spilled and loaded again,
    at a fraction of a model's cost. `Record` validates it as a field (an Origin, or a dict of its fields)."""

    path: str | None = None
    line: int | None = None
    uri: str | None = None
    version: int | None = None
    row: int | None = None

    def sort_key(self) -> tuple[str, int]:
        return (self.path or self.uri or "", self.line if self.line is not None else (self.row or 0))

    def label(self) -> str:
        if self.path is not None:
            # A line for text files, a row for columnar ones (Parquet).
            return f"{self.path}:{self.line}" if self.line is not None else f"{self.path}#{self.row}"
        return f"{self.uri}@{self.version}#{self.row}"

    def to_json(self) -> dict[str, Any]:
        """The fields that hold a value."""
        return msgspec.to_builtins(self)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _as_origin, serialization=core_schema.plain_serializer_function_ser_schema(Origin.to_json)
        )


def _as_origin(value: Any) -> Origin:
    """An Origin as a record field takes it: one, or a dict of its fields."""
    if isinstance(value, Origin):
        return value
    try:
        return msgspec.convert(value, Origin)
    except msgspec.ValidationError as error:
        raise ValueError(f"not an origin: {error}") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CREATED_AT = attrgetter("created_at")
_DATED_ORDER = attrgetter("created_at", "id")


def order_micros(created_at: datetime | None) -> int:
    """The first half of `Record.order_key` as an integer: microseconds since the epoch, an undated record at the
    epoch itself, as `order_key` puts it. The same order as the datetimes (every record's is UTC), in a fixed-width
    value that pickles and compares faster."""
    if created_at is None:
        return 0
    delta = created_at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def sort_in_order(records: list[Any]) -> None:
    """Sorts records in place by `Record.order_key`, (created_at, id) with undated records first. When every record
    is dated the key is read by `attrgetter`, with no Python call per record (a reduce sorts every record it reads)."""
    records.sort(key=_DATED_ORDER if None not in map(_CREATED_AT, records) else Record.order_key)


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 (naive means UTC) or epoch seconds -> an aware UTC datetime. Raises ValueError otherwise."""
    if type(value) is str:
        # What logs mostly hold, a UTC time ending in Z: read as it is (Python 3.11's fromisoformat takes the Z), one
        # call instead of the general way's five, once per record read.
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is timezone.utc:
                return parsed
    if value is None or isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise ValueError("a timestamp must be ISO 8601 text or epoch seconds, not a boolean")
    elif isinstance(value, (int, float)):
        try:
            parsed = datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch seconds {value!r} are outside years 1-9999 UTC") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp or epoch seconds: {value!r}") from None
    else:
        raise ValueError(f"a timestamp must be ISO 8601 text or epoch seconds, got {type(value).__name__}")
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{value!r} is outside years 1-9999 UTC") from None


def format_timestamp(value: datetime | None) -> str | None:
    """ISO 8601 as `isoformat()` writes it, a UTC time ending in `Z`: what msgspec writes (RFC 3339), ~14x faster
    than `isoformat().replace("+00:00", "Z")` (two per example, one per quarantined record)."""
    if value is None:
        return None
    return msgspec.to_builtins(value)


class Record(BaseModel):
    """One logged turn or run output. Only `id` is required; sources fill what their logs hold."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    id: str = Field(min_length=1)
    run_id: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    external_id: str | None = None
    tenant: str | None = None
    source: str | None = None
    bot_id: str | None = None
    created_at: datetime | None = None
    role: Role | None = None
    text: str | None = None
    category: Category | None = None
    reward: float | None = Field(default=None, strict=True, allow_inf_nan=False)
    reward_source: str | None = None
    group_id: str | None = None
    label: Label | None = None
    rank: int | None = Field(default=None, strict=True, ge=1, le=MAX_INT64)
    lifecycle_status: LifecycleStatus | None = None
    supersedes_id: str | None = None
    superseded_by_id: str | None = None
    embedding: list[float] | None = Field(default=None, strict=True)
    source_files: list[str] | None = None
    tokens_used: int | None = Field(default=None, strict=True, ge=0, le=MAX_INT64)
    tool_calls: list[dict[str, Any]] | None = None
    """Calls an assistant turn makes, in the OpenAI/TRL shape {id?, type: function, function: {name, arguments}}."""
    tool_call_id: str | None = None
    """On a tool turn: the id of the call it answers (None: paired with the calls before it, in order)."""
    name: str | None = None
    reasoning: str | None = None
    """An assistant turn's reasoning (thinking) text, kept apart from `text`."""
    ground_truth: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance | None = None
    origin: Origin | None = None

    @field_validator("created_at", mode="before")
    @classmethod
    def _utc_timestamp(cls, value: Any) -> datetime | None:
        return parse_timestamp(value)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_may_be_null(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("id", "run_id", "session_id", "task_id", "external_id", "group_id", "tool_call_id", mode="before")
    @classmethod
    def _ids_are_text(cls, value: Any) -> Any:
        # Numeric ids are common in logs; keep them, as text, so keys compare the same everywhere.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("ground_truth", mode="before")
    @classmethod
    def _answer_is_text(cls, value: Any) -> Any:
        # A verifier's reference answer is often numeric in logs; reward functions compare it as text.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    def order_key(self) -> tuple[datetime, str]:
        """The conversation order every part of distill uses: (created_at, id), undated records first."""
        return (self.created_at or _EPOCH, self.id)

    def __reduce__(self) -> tuple[Any, ...]:
        """Spills and worker messages carry every record, so a record pickles as one msgpack blob of its field
        values (msgspec) and comes back without being validated again (it was when read): per bench record ~5 µs
        to pickle and ~7 to load, against ~10 and ~10 for pydantic's own pickling, the map ~10% faster at 1e5
        records. A record the blob cannot hold exactly (metadata beyond JSON's types, an integer beyond 64 bits, text
        that is not UTF-8, a subclass) pickles the usual way. What comes back equals the record, its
        `model_fields_set` included."""
        try:
            return _restore_record, (_record_blob(self), self.provenance)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
            return copyreg.__newobj__, (type(self),), self.__getstate__()

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data, without empty fields (for quarantine rows and debugging)."""
        data = self.model_dump(mode="json", exclude_none=True)
        if not data.get("metadata"):
            data.pop("metadata", None)
        if self.created_at is not None:
            data["created_at"] = format_timestamp(self.created_at)
        return data


RECORD_FIELDS: tuple[str, ...] = tuple(Record.model_fields)


# A record's values as one msgpack array: typed where msgpack has no exact type of its own (a timestamp, an enum
# member, the origin), Any elsewhere so each value comes back as the type it was. The provenance (a model that may
# hold extra keys) is pickled beside the blob.
_TYPED = {
    "created_at": datetime | None, "role": Role | None, "category": Category | None, "label": Label | None,
    "lifecycle_status": LifecycleStatus | None, "origin": Origin | None, "provenance": None,
}


class _StoredRecordMethods(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What code asks of a record besides its fields, for `StoredRecord` (whose fields `defstruct` adds)."""

    def order_key(self) -> tuple[datetime, str]:
        # `Record.order_key`, spelt out: a reduce asks it of every record several times (sorting, holes, gaps).
        return (self.created_at or _EPOCH, self.id)

    def with_embedding(self) -> Any:
        """This record with its embedding as a list again, for code that reads `embedding` from a record the reduce
        read back from a part spill (`packed_embedding`); the record itself when it holds none packed."""
        if self.packed_embedding is None:
            return self
        return _replace(self, embedding=_unpacked_embedding(self.packed_embedding), packed_embedding=None)

    def as_record(self) -> Record:
        """The pydantic record this holds, as `Record.__reduce__`'s way back builds it."""
        if self.packed_embedding is not None:
            return self.with_embedding().as_record()
        fields = _asdict(self)
        bitmask = fields.pop("fields_set")
        del fields["packed_embedding"]
        if bitmask == VALUED_FIELDS:
            bitmask = sum(_RECORD_SET.bit[name] for name, value in fields.items() if value is not None and value != {})
        return _restored(Record, fields, _RECORD_SET.of(bitmask))

    def to_json(self) -> dict[str, Any]:
        """`Record.to_json`, read by msgspec from the fields (a quarter of the bench's records become quarantine
        rows in the reduce); a record holding values beyond JSON's types or a provenance goes through pydantic."""
        if self.packed_embedding is not None:
            return self.with_embedding().to_json()
        if self.provenance is not None or not self._json_plain():
            return self.as_record().to_json()
        # The values in a twin struct that leaves out a field at its default (None, an empty metadata): to_builtins
        # then gives the dict itself, without a pass in Python over every field (2.3 -> 1.2 µs a bench record). It
        # writes a UTC datetime as `format_timestamp` does, an enum as its value, an origin as its set fields; the
        # last values are `fields_set` and `packed_embedding`, which the twin has not.
        return _to_builtins(_RecordJSON(*_astuple(self)[:-2]))

    def _json_plain(self) -> bool:
        """Whether the free-form fields hold JSON's own types only (see `_json_plain`)."""
        metadata, calls = self.metadata, self.tool_calls
        return (metadata == {} or _json_plain(metadata)) and (calls is None or _json_plain(calls))

    def __reduce__(self) -> tuple[Any, ...]:
        """One msgpack blob of the values, as `Record.__reduce__` writes it (so either comes back as the other's
        reader expects); a record the blob cannot hold exactly goes as its values, pickled."""
        if self._json_plain():
            try:
                return _stored_record, (_stored_encoder.encode(self), self.provenance)
            except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
                pass
        return type(self), msgspec.structs.astuple(self)


StoredRecord = msgspec.defstruct(
    "StoredRecord",
    [(name, _TYPED.get(name, Any)) for name in RECORD_FIELDS]
    + [("fields_set", int), ("packed_embedding", bytes | None, None)],
    bases=(_StoredRecordMethods,), module=__name__,
)
StoredRecord.__doc__ = """A record as a msgspec struct: the same fields as `Record`, its `order_key` and `to_json`,
without a pydantic object's cost to build (~2 µs per bench record to decode from a spill against ~6 for a
`Record`). The JSON Lines fast lane parses valid lines straight into these and the reduce reads spills as these;
code reads records by their fields, so it takes either. `as_record` gives the pydantic record where one is needed.
`origin` is the record's own `Origin` and `provenance` the real model; `fields_set` is the bitmask of
`Record.model_fields_set`, or `VALUED_FIELDS`.

`packed_embedding`: a record read back from a part spill holds its embedding as the msgpack bytes the map packed
(`packed_records`) and `embedding` None: no task reads embeddings, and ~2 µs a bench record (32 floats; ~20 µs with
768) went to building and freeing them in the reduce (bench/RESULTS.md). `to_json` and `as_record` give it back, so
a quarantine row or a pydantic record holds it as read; code that reads `embedding` itself in the reduce must call
`with_embedding()` first (`distill.record.with_embedding`, for a record of either class)."""
_RecordJSON = msgspec.defstruct(
    "_RecordJSON",
    [(name, _TYPED.get(name, Any), msgspec.field(default_factory=dict) if name == "metadata" else None)
     for name in RECORD_FIELDS],
    omit_defaults=True, gc=False, module=__name__,
)
"""A record's JSON as `StoredRecord.to_json` gives it: the same fields, each left out at its default."""
VALUED_FIELDS = -1
"""`StoredRecord.fields_set` for a record parsed by the fast lane: the fields holding a value stand for the fields
set (a JSON null the line spelt out is not counted; nothing but pydantic's own pickling reads the set)."""
RECORD_CLASSES = (Record, StoredRecord)
"""What a record is, for an `isinstance` check: the pydantic model, or its msgspec twin (what the fast lane parses and
the reduce reads)."""
_PROVENANCE_AT = RECORD_FIELDS.index("provenance")
_FREE_FORM = ("metadata", "tool_calls")
"""The fields whose values a source or step may build from anything: the only ones that need a look before the
blob can hold them exactly."""
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StoredRecord)


def _model_in_blob(value: Any) -> Any:
    """The provenance (a model) goes into a StoredRecord's blob as nil: it is pickled beside the blob."""
    if type(value) is Provenance:
        return None
    raise NotImplementedError(f"a {type(value).__name__} in a record's blob")


_stored_encoder = msgspec.msgpack.Encoder(enc_hook=_model_in_blob)
_replace = msgspec.structs.replace
_asdict = msgspec.structs.asdict
_astuple = msgspec.structs.astuple
_to_builtins = msgspec.to_builtins
_force_set = msgspec.structs.force_setattr
_set = object.__setattr__
_SCALARS = (str, int, float, bool, type(None))


def _json_plain(value: Any) -> bool:
    """Whether msgpack gives `value` back as it is: JSON's own types all the way down. A tuple would come back a
    list, a date or a Decimal as text, a datetime in another zone in UTC."""
    if isinstance(value, dict):
        return all(type(key) is str and _json_plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_json_plain(item) for item in value)
    return type(value) in _SCALARS


class _FieldsSet:
    """Which of a model's fields its input set (pydantic's `model_fields_set`), carried as a bitmask over the field
    order and restored as one set per distinct combination, shared by the records that have it: a set per record
    cost ~800 bytes each in a reduce worker. Sharing is safe: pydantic copies a model's fields set before it adds
    to it (`model_copy(update=...)`), and a frozen model's never changes in place."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.bit = {name: 1 << position for position, name in enumerate(model.model_fields)}
        self.shared: dict[int, set[str]] = {}

    def bitmask(self, instance: BaseModel) -> int:
        return sum(map(self.bit.__getitem__, instance.__pydantic_fields_set__))

    def of(self, bitmask: int) -> set[str]:
        found = self.shared.get(bitmask)
        if found is None:
            found = self.shared[bitmask] = {name for name, bit in self.bit.items() if bitmask & bit}
        return found


_RECORD_SET = _FieldsSet(Record)


def _record_blob(record: Record) -> bytes:
    """Raises TypeError (or msgspec's own errors) for a record the blob cannot hold exactly."""
    fields = record.__dict__
    if type(record) is not Record or not all(_json_plain(fields[name]) for name in _FREE_FORM):
        raise TypeError("pickled by pydantic")
    values = [*fields.values(), _RECORD_SET.bitmask(record)]
    values[_PROVENANCE_AT] = None
    return _encoder.encode(values)


def _restored(model: type[BaseModel], fields: dict[str, Any], fields_set: set[str]) -> Any:
    """The model holding `fields` (all of them, in order), built as pydantic's own unpickling builds it."""
    instance = model.__new__(model)
    _set(instance, "__dict__", fields)
    _set(instance, "__pydantic_fields_set__", fields_set)
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance


def _restore_record(blob: bytes, provenance: Provenance | None) -> Record:
    """`Record.__reduce__`'s way back (the field order is the class's own, the same in every process of a run)."""
    return _stored_record(blob, provenance).as_record()


def _stored_record(blob: bytes, provenance: Provenance | None) -> Any:
    """The blob as a `StoredRecord`, its provenance the real model."""
    stored = _decoder.decode(blob)
    if provenance is not None:
        _force_set(stored, "provenance", provenance)
    return stored


class _StoredRecordUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == _restore_record.__name__:
            return _stored_record
        return super().find_class(module, name)


def replaced(record: Any, **changes: Any) -> Any:
    """A copy of `record` (a Record or a StoredRecord) with `changes` (not validated again), for a step that edits."""
    if isinstance(record, Record):
        return record.model_copy(update=changes)
    bitmask = record.fields_set
    if bitmask != VALUED_FIELDS:
        bitmask |= sum(_RECORD_SET.bit[name] for name in changes)
    if "embedding" in changes:
        changes["packed_embedding"] = None
    return msgspec.structs.replace(record, **changes, fields_set=bitmask)


_records_decoder = msgspec.msgpack.Decoder(list[StoredRecord])


def packed_records(records: Sequence[Any]) -> bytes | None:
    """Many `StoredRecord`s as one msgpack array, each as its `__reduce__` writes it but for its embedding, which goes
    apart as its own msgpack bytes (`packed_embedding`): one call for a batch instead of one pickled blob per record
    (4,096 bench records: 2.73 -> 1.37 µs a record to pickle, 2.44 -> 2.15 to load). None when one of them cannot go
    in a blob (a provenance, values beyond JSON's types, a pydantic `Record`): the caller then pickles them one by
    one."""
    for record in records:
        if type(record) is not StoredRecord or record.provenance is not None or not record._json_plain():
            return None
    try:
        return _stored_encoder.encode([
            record if record.embedding is None
            else _replace(record, embedding=None, packed_embedding=_encoder.encode(record.embedding))
            for record in records
        ])
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return None


def unpacked_records(blob: bytes) -> list[Any]:
    """The `StoredRecord`s `packed_records` packed, in order, each embedding still packed (`packed_embedding`)."""
    return _records_decoder.decode(blob)


def _unpacked_embedding(packed: bytes) -> Any:
    """An embedding as `packed_records` packed it: msgpack gives back the very values (a float a float, an int an
    int), as the record's own blob did before embeddings went apart."""
    return msgspec.msgpack.decode(packed)


def with_embedding(record: Any) -> Any:
    """The record with its embedding as a list, whether a `Record` or a `StoredRecord` the reduce read back with it
    packed: what code reading `embedding` in the reduce calls first."""
    return record.with_embedding() if type(record) is StoredRecord else record


def load_stored_records(data: bytes) -> Any:
    """`pickle.loads`, with every record pickled by `Record.__reduce__` coming back as a `StoredRecord`."""
    return _StoredRecordUnpickler(io.BytesIO(data)).load()

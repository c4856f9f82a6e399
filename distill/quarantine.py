"""Quarantine rows and the ledger that proves every input row ended in exactly one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from distill.output.files import JSON_OPTIONS, json_ready
from distill.reasons import Reason
from distill.record import RECORD_CLASSES, Origin, Record

MAX_QUARANTINED_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Drop:
    """A step's verdict on one record: it leaves the data, for this reason."""

    reason: Reason
    errors: tuple[str, ...] = ()
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class QuarantineRow:
    step: str
    reason: Reason
    errors: tuple[str, ...]
    record_id: str | None
    origin: Origin | None
    record: Record | dict[str, Any] | str | None
    detail: dict[str, Any] | None = None

    @classmethod
    def of(cls, step: str, record: Record, drop: Drop) -> QuarantineRow:
        return cls(step, drop.reason, drop.errors, record.id, record.origin, record, drop.detail)

    def sort_key(self) -> tuple[str, int, str]:
        return place_key(self.origin, self.record_id)

    def to_json(self, *, encoded: bool = False) -> dict[str, Any]:
        """The row as JSON-ready data (`row_json`)."""
        return row_json(
            self.step, self.reason, self.errors, self.record_id, self.origin, self.record, self.detail, encoded=encoded
        )


def place_key(origin: Origin | None, record_id: str | None) -> tuple[str, int, str]:
    """A quarantine row's place in the quarantine file: its origin (file order), then its record id."""
    origin_key = origin.sort_key() if origin is not None else ("", 0)
    return (*origin_key, record_id or "")


def row_json(
    step: str, reason: Reason, errors: tuple[str, ...], record_id: str | None, origin: Origin | None,
    record: Any, detail: dict[str, Any] | None = None, *, encoded: bool = False,
) -> dict[str, Any]:
    """A quarantine row as JSON-ready data. With `encoded`, a record kept whole comes already encoded (an
    `orjson.Fragment`, the bytes the row's writer would give it): `_truncated` has to encode most records to measure
    them, and the writer then embeds those bytes instead of encoding the record a second time. Only for a row no step
    redacts: a step sees a fragment as one opaque value."""
    data: Any = record.to_json() if isinstance(record, RECORD_CLASSES) else record
    row: dict[str, Any] = {
        "step": step,
        "reason": reason.value,
        "errors": list(errors),
        "record_id": record_id,
        "origin": origin.to_json() if origin is not None else None,
        "record": _truncated(data, encoded),
    }
    if detail:
        row["detail"] = detail
    return row


def _truncated(record: Any, encoded: bool = False) -> Any:
    """`record` as a quarantine row holds it: whole (as an `orjson.Fragment` of its JSON with `encoded`) when its
    JSON is within MAX_QUARANTINED_RECORD_BYTES, else the start of its JSON as text."""
    if record is None or (not encoded and type(record) is dict and _surely_short(record)):
        return record
    text = record if isinstance(record, str) else None
    if text is None:
        try:
            # Encoded one level down, where the row holds it: a record orjson takes alone but not inside the row
            # (nesting one short of orjson's limit) is made ready here, never left to fail as the row is written.
            data = orjson.dumps([record], option=JSON_OPTIONS)[1:-1]
        except orjson.JSONEncodeError:
            # Whatever the input held (300 levels of nesting, a 30-digit integer): the row is still written.
            record = json_ready(record)
            data = orjson.dumps(record, option=JSON_OPTIONS)
        if len(data) <= MAX_QUARANTINED_RECORD_BYTES:
            return orjson.Fragment(data) if encoded else record
        text = data.decode("utf-8")
    encoded_text = text.encode("utf-8", errors="backslashreplace")
    if len(encoded_text) <= MAX_QUARANTINED_RECORD_BYTES:
        return text
    return encoded_text[:MAX_QUARANTINED_RECORD_BYTES].decode("utf-8", errors="ignore")


def _surely_short(record: dict[str, Any]) -> bool:
    """Whether a flat record (ASCII text, numbers, an origin: what most quarantined records are) is surely within
    the limit once encoded, by a bound (an escaped character is at most 6 bytes), and surely encodable: so
    `_truncated` need not encode it to find out (the quarantine's writer encodes it once anyway)."""
    bound = 0
    for key, value in record.items():
        if type(key) is not str or (type(value) is dict and not all(type(inner) is str for inner in value)):
            return False  # a store's map with other keys: only json_ready makes it writable
        items = value.values() if type(value) is dict else (value,)  # one level: the origin
        for item in items:
            kind = type(item)
            if kind is str:
                if not item.isascii():
                    return False
                bound += 64 + 6 * len(item)
            elif kind is float or kind is bool or item is None or (kind is int and -(2**63) <= item < 2**64):
                bound += 96
            else:
                return False
    return bound <= MAX_QUARANTINED_RECORD_BYTES


class AccountingError(RuntimeError):
    """The ledger does not close: a record was lost, or both exported and quarantined. Always a distill bug."""


class RowSink(Protocol):
    """Where quarantine rows go as steps and tasks make them: a `Ledger`, or a reduce partition's `EncodedLedger`."""

    def quarantine(self, row: QuarantineRow) -> None: ...

    def drop(self, step: str, record: Record, drop: Drop) -> None: ...


def close_accounts(input_rows: int, record_ids: list[Any], rows: int, exported_ids: set[str]) -> dict[str, int]:
    """The accounting rule over `rows` quarantine rows, `record_ids` the ids of those about a parsed record: each
    such id once, none of them exported, and every input row exported or quarantined."""
    seen: set[str] = set()
    for record_id in record_ids:
        if record_id in seen:
            raise AccountingError(f"record {record_id!r} has more than one quarantine row")
        seen.add(record_id)
    both = exported_ids & seen
    if both:
        raise AccountingError(f"records both exported and quarantined: {sorted(both)[:5]}")
    if len(exported_ids) + rows != input_rows:
        raise AccountingError(f"{input_rows} input rows, but {len(exported_ids)} exported + {rows} quarantined")
    return {"input_rows": input_rows, "exported_records": len(exported_ids), "quarantined_rows": rows}


@dataclass
class Ledger:
    """Counts input rows and collects quarantine rows; `close` checks the contract's accounting rule."""

    input_rows: int = 0
    rows: list[QuarantineRow] = field(default_factory=list)

    def quarantine(self, row: QuarantineRow) -> None:
        self.rows.append(row)

    def drop(self, step: str, record: Record, drop: Drop) -> None:
        self.rows.append(QuarantineRow.of(step, record, drop))

    def close(self, exported_ids: set[str]) -> dict[str, int]:
        """Rows rejected before they became a record (parse errors, repeated ids) count as rows; every row about a
        parsed Record is accounted by its id, which must be unique here and absent from the exported examples."""
        record_ids = [row.record_id for row in self.rows if isinstance(row.record, RECORD_CLASSES)]
        return close_accounts(self.input_rows, record_ids, len(self.rows), exported_ids)

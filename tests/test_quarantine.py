"""Quarantine rows as their spills hold them: the line a row becomes is the same whether its record comes already
encoded (no step redacts) or as data the steps may rewrite."""

from __future__ import annotations

import pickle
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest
from step_helpers import make_step, rec

from distill.output.files import jsonl_bytes
from distill.plan.map import quarantine_entry, redact_row, redacts_rows
from distill.quarantine import MAX_QUARANTINED_RECORD_BYTES, Drop, QuarantineRow
from distill.reasons import Reason
from distill.record import Origin, StoredRecord, load_stored_records

NESTED: list = []
for _ in range(300):
    NESTED = [NESTED]

CALLS = [{"type": "function", "function": {"name": "send", "arguments": {"to": "bob", "body": "hi"}}}]
RECORDS = {
    "flat": rec("flat", 1, text="hello", role="user", origin=Origin(path="a.jsonl", line=2)),
    "non_ascii": rec("non_ascii", 2, text="grüße, 東京 \u2028 \x01 \"quoted\""),
    "tool_calls": rec("tool_calls", 3, role="assistant", tool_calls=CALLS, reward=0.25),
    "nested_metadata": rec("nested_metadata", 4, text="x", metadata={"b": {"z": [1, 2.5, None]}, "a": True}),
    "beyond_json_metadata": rec(
        "beyond_json_metadata", 5, text="x",
        metadata={"when": datetime(2026, 1, 1, tzinfo=timezone.utc), "pair": (1, 2), "amount": Decimal("1.5")},
    ),
    "huge_int_metadata": rec("huge_int_metadata", 6, text="x", metadata={"n": 2**70}),
    "embedding": rec("embedding", 7, text="x", embedding=[0.1, -1e-7, 3.0, 1e16]),
    "over_the_limit": rec("over_the_limit", 8, text="ü" * MAX_QUARANTINED_RECORD_BYTES),
    "just_within_the_limit": rec("just_within_the_limit", 9, text="a" * (MAX_QUARANTINED_RECORD_BYTES - 100)),
}
RAW = {
    "raw_row": {"id": 3, "b": [1, "two"], "a": None},
    "raw_nested": {"id": "deep", "x": NESTED},
    "raw_huge_int": {"id": "n", "n": 10**30},
    "raw_text": "not json at all: ü",
    "raw_long_text": "x" * (MAX_QUARANTINED_RECORD_BYTES + 10),
    "none": None,
}


def stored(record):
    [(_, back)] = load_stored_records(pickle.dumps([(0, record)], protocol=pickle.HIGHEST_PROTOCOL))
    return back


def rows() -> list[QuarantineRow]:
    drop = Drop(Reason.schema_violation, ("an error",), {"example_id": "e1"})
    out = [QuarantineRow.of("task", record, drop) for record in RECORDS.values()]
    out += [QuarantineRow.of("task", stored(record), drop) for record in RECORDS.values()]
    out += [QuarantineRow("parse", Reason.schema_violation, ("bad",), None, Origin(path="a", line=1), raw)
            for raw in RAW.values()]
    return out


def test_the_reduce_reads_records_of_both_kinds_here():
    assert any(isinstance(row.record, StoredRecord) for row in rows())


@pytest.mark.parametrize("row", rows(), ids=lambda row: f"{type(row.record).__name__}-{row.record_id}")
def test_a_row_whose_record_comes_encoded_is_the_line_the_general_path_writes(row):
    general = redact_row([], row.to_json())
    assert quarantine_entry([], row) == (row.sort_key(), (general["reason"], general.get("record_id")),
                                         jsonl_bytes(general))


def test_a_record_over_the_limit_is_cut_to_text_on_either_path():
    row = QuarantineRow.of("task", stored(RECORDS["over_the_limit"]), Drop(Reason.schema_violation))
    for encoded in (False, True):
        record = orjson.loads(jsonl_bytes(row.to_json(encoded=encoded)))["record"]
        assert isinstance(record, str) and len(record.encode()) <= MAX_QUARANTINED_RECORD_BYTES


def test_a_redacting_step_sees_the_record_as_data_and_its_redaction_is_written():
    scrub = make_step("scrub_secrets", library="none")
    plain = [make_step("non_empty_text")]
    assert redacts_rows([*plain, scrub]) and not redacts_rows(plain)
    record = rec("a", 1, text="mail jane.doe@example.com", tool_calls=[{"arguments": {"to": "jane.doe@example.com"}}])
    for row in (QuarantineRow.of("task", record, Drop(Reason.after_gap)),
                QuarantineRow.of("task", stored(record), Drop(Reason.after_gap))):
        line = quarantine_entry([*plain, scrub], row)[2]
        assert b"jane.doe@example.com" not in line and b"[REDACTED:email]" in line
        assert line == jsonl_bytes(redact_row([scrub], row.to_json()))
        assert b"jane.doe@example.com" in quarantine_entry(plain, row)[2]


def nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("raw", [
    {"id": "deep", "metadata": nested(252)},  # orjson takes it alone, not one level down (in the row)
    {"id": "keys", 7: "a store's map with an integer key"},
    {"id": "inner_keys", "origin": {1: "x"}},
], ids=["one-short-of-the-limit", "integer-key", "integer-key-one-level-down"])
@pytest.mark.parametrize("redacting", [False, True])
def test_a_raw_row_any_writer_would_refuse_still_becomes_a_line_with_or_without_a_redacting_step(raw, redacting):
    steps = [make_step("scrub_secrets", library="none")] if redacting else []
    row = QuarantineRow("parse", Reason.invalid_json, ("bad",), None, Origin(path="a", line=1), raw)
    line = orjson.loads(quarantine_entry(steps, row)[2])
    assert line["reason"] == "invalid_json" and line["record"]["id"] == raw["id"]

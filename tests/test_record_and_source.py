"""The record model and the JSONL source: timestamps, ids, field maps, and every kind of bad line."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta, timezone

import pytest
from helpers import compose_config, run_pipeline, write_jsonl

from distill.config import build_settings
from distill.errors import ConfigError
from distill.record import (
    RECORD_CLASSES, RECORD_FIELDS, Origin, Record, StoredRecord, _restore_record, load_stored_records,
    format_timestamp, parse_timestamp, sort_in_order,
)
from distill.sources.fast_lane import fast_record
from distill.sources.jsonl import JsonlParams, JsonlSource
from distill.curation.chain import read_records
from distill.quarantine import Ledger


def read(tmp_path, rows, *overrides):
    path = write_jsonl(tmp_path / "logs" / "a.jsonl", rows)
    settings = build_settings(compose_config([f"source.path={path}", *overrides]))
    ledger = Ledger()
    records, report = read_records(settings, ledger)
    return records, ledger.rows, report


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=timezone.utc)),
        ("2026-03-01T10:00:00.25z", datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=timezone.utc)),
        (" 2026-03-01T10:00:00Z\t", datetime(2026, 3, 1, 10, tzinfo=timezone.utc)),
        ("2026-03-01T10:00:00+00:00", datetime(2026, 3, 1, 10, tzinfo=timezone.utc)),
        ("2026-03-01T10:00:00-00:30", datetime(2026, 3, 1, 10, 30, tzinfo=timezone.utc)),
        ("2026-03-01T12:00:00+02:00", datetime(2026, 3, 1, 10, tzinfo=timezone.utc)),
        ("2026-03-01T10:00:00", datetime(2026, 3, 1, 10, tzinfo=timezone.utc)),
        (1772359200, datetime(2026, 3, 1, 10, tzinfo=timezone.utc)),
        (1772359200.5, datetime(2026, 3, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)),
    ],
)
def test_timestamps_are_iso_or_epoch_and_stored_as_utc(value, expected):
    assert parse_timestamp(value) == expected
    assert Record(id="r", created_at=value).created_at.tzinfo == timezone.utc


@pytest.mark.parametrize("value", [
    datetime(2026, 3, 1, 10, tzinfo=timezone.utc), datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc),
    datetime(9999, 12, 31, 23, 59, 59, 500000, tzinfo=timezone.utc), datetime(2026, 3, 1, 10, 30, 5),
    datetime(2026, 3, 1, 10, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 3, 1, 10, 0, 0, 120, tzinfo=timezone(-timedelta(hours=2))),
])
def test_a_timestamp_is_written_as_isoformat_with_z_for_utc(value):
    assert format_timestamp(value) == value.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("value", ["yesterday", True, [2026]])
def test_bad_timestamps_are_rejected(value):
    with pytest.raises(ValueError):
        Record.model_validate({"id": "r", "created_at": value})


def test_order_key_is_created_at_then_id_with_undated_first():
    records = [
        Record(id="b", created_at="2026-01-01T00:00:01Z"),
        Record(id="a", created_at="2026-01-01T00:00:01Z"),
        Record(id="z"),
        Record(id="c", created_at="2026-01-01T00:00:00Z"),
    ]
    assert [r.id for r in sorted(records, key=Record.order_key)] == ["z", "c", "a", "b"]


@pytest.mark.parametrize("undated", [False, True])
def test_sort_in_order_sorts_as_the_order_key_does(undated):
    # Records as the reduce holds them (StoredRecords), all dated (sorted by attrgetter) or one undated.
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    records = [
        fast_record(json.dumps({"id": f"r{i % 5}-{i}", "created_at": format_timestamp(when + timedelta(seconds=i % 3))})
                    .encode(), Origin(path="x.jsonl", line=i + 1))
        for i in range(30)
    ]
    if undated:
        records.append(fast_record(b'{"id": "undated"}', Origin(path="x.jsonl", line=31)))
    shuffled = records[::7] + records[1::7] + records[2::7] + records[3::7] + records[4::7] + records[5::7] + records[6::7]
    sort_in_order(shuffled)
    assert [r.id for r in shuffled] == [r.id for r in sorted(records, key=Record.order_key)]
    assert (shuffled[0].id == "undated") is undated


FULL_RECORD = {
    "id": "r1", "session_id": "s1", "created_at": "0001-01-01T00:00:00.000001Z", "role": "assistant",
    "text": "héllo", "category": "accepted", "reward": 0.5, "label": "chosen", "rank": 2**63 - 1,
    "lifecycle_status": "active", "embedding": [0.1, -0.0, 1e308], "source_files": ["a.py"], "tokens_used": 0,
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    "metadata": {"nested": [1, 2.5, None, True, {"deep": "x"}], "unicode": "日本"},
    "provenance": {"source_file": "f.jsonl", "an_extra_key": [1, {"of": "any shape"}]},
    "origin": {"path": "logs/a.jsonl", "line": 7},
}


@pytest.mark.parametrize(("fields", "compact"), [
    ({}, True),
    ({"created_at": "9999-12-31T23:59:59.999999+05:00", "origin": None, "provenance": None}, True),
    ({"metadata": {"beyond_64_bits": 2**70}}, False),
    ({"metadata": {"a_tuple": (1, 2)}}, False),
    ({"metadata": {"a_date": datetime(2024, 1, 1, tzinfo=timezone.utc).date()}}, False),
    ({"text": "\ud800 is no UTF-8"}, False),
])
def test_a_pickled_record_comes_back_exactly(fields, compact):
    # Spills and worker messages pickle every record: what comes back must be the record, value types included
    # (a tuple stays a tuple, a date a date), whichever way it was pickled.
    record = Record.model_validate({**FULL_RECORD, **fields})
    back = pickle.loads(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == record and repr(back) == repr(record)
    assert [type(value) for value in back.__dict__.values()] == [type(value) for value in record.__dict__.values()]
    assert back.created_at.utcoffset() == record.created_at.utcoffset()
    assert back.origin == record.origin and back.provenance == record.provenance
    assert back.model_fields_set == record.model_fields_set
    # A copy with a change sets that field on the copy alone (restored records may share their fields set).
    twin = pickle.loads(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
    changed = back.model_copy(update={"reasoning": "why"})
    assert "reasoning" in changed.model_fields_set and "reasoning" not in twin.model_fields_set
    if isinstance(record.metadata.get("a_tuple"), tuple):
        assert type(back.metadata["a_tuple"]) is tuple
    # The common record travels as a compact blob of its values; the rest the way pydantic pickles them.
    assert (Record.__reduce__(record)[0].__name__ == "_restore_record") is compact


@pytest.mark.parametrize("fields", [
    {}, {"created_at": "9999-12-31T23:59:59.999999+05:00", "origin": None, "provenance": None},
    {"metadata": {"a_tuple": (1, 2)}},
    # Empty and falsy values: only None and an empty metadata leave the JSON.
    {"metadata": {}, "source_files": [], "text": "", "reward": 0.0, "embedding": [], "provenance": None},
])
def test_the_reduce_reads_a_spilled_record_as_a_stored_record_with_the_same_fields(fields):
    # The reduce only reads records: the spill's blob comes back as a msgspec struct, not a pydantic object, with
    # the record's values, order key and JSON; a record pickled the pydantic way comes back as the record.
    record = Record.model_validate({**FULL_RECORD, **fields})
    [(handle, back)] = load_stored_records(pickle.dumps([(7, record)], protocol=pickle.HIGHEST_PROTOCOL))
    assert handle == 7
    assert isinstance(back, StoredRecord if Record.__reduce__(record)[0] is _restore_record else Record)
    assert isinstance(back, RECORD_CLASSES)
    assert {name: getattr(back, name) for name in RECORD_FIELDS} == record.__dict__
    assert back.order_key() == record.order_key() and back.to_json() == record.to_json()
    assert back.as_record() == record if isinstance(back, StoredRecord) else back == record


def test_bad_lines_are_quarantined_and_the_rest_of_the_file_is_read(tmp_path):
    rows = [
        {"id": "ok-1", "text": "first"},
        b'{"id": "broken", "text": ',
        b'{"id": "bad-bytes", "text": "caf\xff\xfe"}',
        b"[1, 2, 3]",
        {"id": "wrong-type", "reward": "high"},
        {"id": "bad-enum", "category": "great"},
        {"id": "bad-time", "created_at": "yesterday"},
        {"id": "bad-role", "role": "robot"},
        b"   ",
        {"id": "ok-2", "text": "last"},
    ]
    records, quarantined, report = read(tmp_path, rows)
    assert [r.id for r in records] == ["ok-1", "ok-2"]
    reasons = {row.record_id: (row.reason.value, row.step) for row in quarantined}
    assert reasons == {
        "a.jsonl:2": ("invalid_json", "parse"),
        "a.jsonl:3": ("invalid_utf8", "parse"),
        "a.jsonl:4": ("schema_violation", "parse"),
        "wrong-type": ("schema_violation", "parse"),
        "bad-enum": ("schema_violation", "parse"),
        "bad-time": ("schema_violation", "parse"),
        "bad-role": ("schema_violation", "parse"),
    }
    wrong_type = next(row for row in quarantined if row.record_id == "wrong-type")
    assert wrong_type.errors[0].startswith("reward:")
    assert wrong_type.record == {"id": "wrong-type", "reward": "high"}
    assert report.kept == 2 and sum(report.dropped.values()) == 7


def test_a_repeated_embedding_key_is_read_the_full_way_whichever_copy_is_bad(tmp_path):
    """A line whose first `embedding` is out of range or not UTF-8 (or names the key with escapes) is quarantined as
    the full path finds it, whatever the second copy holds; a line whose copies are all good reads as the last one,
    as JSON objects do. (A fast lane that kept the embedding as raw JSON took such lines: msgspec checks the values
    a repeated key leaves behind only for their syntax.)"""
    rows = [
        b'{"id": "huge", "embedding": [1e999], "embedding": [1]}',
        b'{"id": "bytes", "embedding": "\xff\xfe", "embedding": [1]}',
        rb'{"id": "escaped", "embe\u0064ding": [1e999], "embedding": [1]}',
        b'{"id": "twice", "embedding": [1], "embedding": [0.5, 2]}',
    ]
    records, quarantined, _ = read(tmp_path, rows)
    assert [(r.id, r.embedding) for r in records] == [("twice", [0.5, 2.0])]
    assert {row.record_id: row.reason.value for row in quarantined} == {
        "a.jsonl:1": "invalid_json", "a.jsonl:2": "invalid_utf8", "a.jsonl:3": "invalid_json",
    }


def test_a_line_nested_deeper_than_python_recurses_is_read_the_full_way(tmp_path):
    # 990 levels: JSON that orjson reads (its limit is 1,024) but msgspec, like Python, recurses too deep for
    deep = "[" * 990 + "]" * 990
    rows = [b'{"id": "deep", "text": "x", "metadata": {"x": ' + deep.encode() + b"}}", {"id": "ok", "text": "x"}]
    records, quarantined, _ = read(tmp_path, rows)
    assert [r.id for r in records] == ["ok"]
    assert [(row.record_id, row.reason.value, row.errors) for row in quarantined] == [
        ("deep", "schema_violation", ("metadata: nested deeper than 200 levels",))
    ]


def test_a_field_of_the_wrong_type_nested_too_deep_to_repr_is_quarantined(tmp_path):
    deep = ("[" * 990 + "]" * 990).encode()
    rows = [b'{"id": "a", "session_id": ' + deep + b"}", {"id": "ok", "text": "x"}]
    records, quarantined, _ = read(tmp_path, rows)
    assert [r.id for r in records] == ["ok"]
    (row,) = quarantined
    assert row.reason.value == "schema_violation"
    assert row.errors[0].startswith("session_id: Input should be a valid string (got [[[")


def test_invalid_json_keeps_the_raw_line_as_text(tmp_path):
    _, quarantined, _ = read(tmp_path, [b'{"id": "broken", "text": '])
    assert quarantined[0].record == '{"id": "broken", "text": '
    assert quarantined[0].origin.path == "a.jsonl" and quarantined[0].origin.line == 1


def test_rows_without_id_get_one_from_their_relative_origin(tmp_path):
    records, _, _ = read(tmp_path, [{"text": "no id"}, {"id": 42, "text": "numeric id"}])
    assert sorted(r.id for r in records) == ["42", "a.jsonl:1"]
    assert {r.origin.path for r in records} == {"a.jsonl"}


def test_a_repeated_id_is_a_duplicate_row(tmp_path):
    records, quarantined, _ = read(tmp_path, [{"id": "x", "text": "one"}, {"id": "x", "text": "two"}])
    assert [r.text for r in records] == ["one"]
    assert [(q.reason.value, q.origin.line) for q in quarantined] == [("duplicate", 2)]


def test_field_map_dotted_paths_json_columns_and_leftovers(tmp_path):
    rows = [{"uid": "r1", "text_payload": "hello", "metadata": {"reward": 0.7}, "state": '{"tokens": 3}', "extra": 1}]
    records, quarantined, _ = read(
        tmp_path,
        rows,
        "+source.fields.id=uid",
        "+source.fields.text=text_payload",
        "+source.fields.reward=metadata.reward",
        "+source.fields.tokens_used={path: state.tokens}",
    )
    assert not quarantined
    (record,) = records
    assert (record.id, record.text, record.reward) == ("r1", "hello", 0.7)
    assert record.metadata["extra"] == 1 and record.metadata["reward"] == 0.7


def test_field_map_decodes_json_encoded_columns(tmp_path):
    rows = [{"id": "r1", "meta_json": '{"team": "search"}'}, {"id": "r2", "meta_json": "{not json"}]
    records, quarantined, _ = read(tmp_path, rows, "+source.fields.metadata={path: meta_json, decode: json}")
    assert records[0].metadata == {"team": "search"}
    assert quarantined[0].reason.value == "schema_violation" and "not valid JSON" in quarantined[0].errors[0]


def test_field_map_rejects_unknown_record_fields(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "x"}])
    with pytest.raises(ConfigError, match="source.fields"):
        build_settings(compose_config([f"source.path={path}", "+source.fields.nonsense=x"]))


def test_directory_and_glob_sources_read_files_in_sorted_order(tmp_path):
    write_jsonl(tmp_path / "logs" / "b" / "2.jsonl", [{"id": "b2", "text": "x"}])
    write_jsonl(tmp_path / "logs" / "a.jsonl", [{"id": "a1", "text": "x"}])
    write_jsonl(tmp_path / "logs" / "b" / "1.jsonl", [{"id": "b1", "text": "x"}])
    for path in (tmp_path / "logs", f"{tmp_path}/logs/**/*.jsonl"):
        settings = build_settings(compose_config([f"source.path={path}", "split=none"]))
        records, _ = read_records(settings, Ledger())
        assert [r.origin.path for r in records] == ["a.jsonl", "b/1.jsonl", "b/2.jsonl"]
        assert [entry["rows"] for entry in settings.source.inputs()] == [1, 1, 1]


def test_input_files_are_hashed_in_the_manifest(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "role": "user", "text": "hi"}])
    result = run_pipeline(tmp_path / "out", [f"source.path={path}"])
    (entry,) = result.manifest["inputs"]
    import hashlib

    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and entry["rows"] == 1


def test_a_file_sources_size_hint_is_its_files_bytes_and_zero_when_it_cannot_be_read(tmp_path):
    # The local executor starts its workers' fork server early only for an input of more than one shard.
    first = write_jsonl(tmp_path / "logs" / "a.jsonl", [{"id": "x", "role": "user", "text": "hi"}])
    second = write_jsonl(tmp_path / "logs" / "b.jsonl", [{"id": "y", "role": "user", "text": "hello there"}])
    source = JsonlSource(JsonlParams(kind="jsonl", path=str(tmp_path / "logs")))
    assert source.size_hint() == first.stat().st_size + second.stat().st_size
    assert JsonlSource(JsonlParams(kind="jsonl", path=str(tmp_path / "missing"))).size_hint() == 0


def test_input_record_schema_agrees_with_the_record_model(tmp_path):
    from jsonschema import Draft202012Validator
    from pydantic import ValidationError

    from distill.validation import load_schema

    validator = Draft202012Validator(load_schema("input_record"))
    good = [
        {"id": "a", "role": "assistant", "category": "accepted", "reward": 1, "created_at": "2026-01-01T00:00:00Z"},
        {"id": 7, "label": "chosen", "rank": 1, "lifecycle_status": "superseded", "metadata": None},
    ]
    bad = [{"id": "a", "reward": "high"}, {"id": "a", "category": "great"}, {"id": "a", "rank": 0}, {"text": "x"}]
    for row in good:
        assert validator.is_valid(row)
        Record.model_validate(row)
    for row in bad:
        assert not validator.is_valid(row), json.dumps(row)
        with pytest.raises(ValidationError):
            Record.model_validate(row)


_DEEP = "[" * 300 + "]" * 300
_LANE_LINES = [
    '{"id": "a", "session_id": "s", "role": "user", "text": "hi", "created_at": "2026-01-01T00:00:00Z", "category": "accepted"}',
    json.dumps({k: v for k, v in FULL_RECORD.items() if k not in ("provenance", "origin")}),
    '{"id": "a", "created_at": "2026-01-01 00:00:00"}', '{"id": "a", "created_at": "2026-01-01T00:00:00.5+02:00"}',
    '{"id": "a", "created_at": 1700000000}', '{"id": "a", "created_at": 1700000000.25}',
    '{"id": "a", "created_at": " 2026-01-01T00:00:00z "}', '{"id": "a", "created_at": "bad"}',
    '{"id": "a", "created_at": true}', '{"id": "a", "created_at": null}', '{"id": "a", "created_at": 1e20}',
    '{"id": 5}', '{"id": ""}', '{"id": null}', '{"text": "no id"}', '{"id": " "}',
    '{"id": "a", "reward": 1}', '{"id": "a", "reward": true}', '{"id": "a", "reward": "1"}',
    '{"id": "a", "reward": 1e400}', '{"id": "a", "reward": 100000000000000000000000000000}',
    '{"id": "a", "reward": -0.0}', '{"id": "a", "reward": 2.2250738585072014e-308}',
    '{"id": "a", "rank": 0}', '{"id": "a", "rank": 1.0}', '{"id": "a", "rank": 9223372036854775808}',
    '{"id": "a", "rank": true}', '{"id": "a", "tokens_used": -1}', '{"id": "a", "tokens_used": 0}',
    '{"id": "a", "role": "USER"}', '{"id": "a", "role": "tool", "tool_call_id": "c1", "name": "f"}',
    '{"id": "a", "metadata": null}', '{"id": "a", "metadata": {}}', '{"id": "a", "metadata": {"x": 1e400}}',
    '{"id": "a", "metadata": {"x": 1180591620717411303424}}', '{"id": "a", "metadata": {"x": NaN}}',
    '{"id": "a", "metadata": {"deep": ' + _DEEP + '}}', '{"id": "a", "metadata": []}',
    '{"id": "a", "embedding": [1, 2]}', '{"id": "a", "embedding": [true]}', '{"id": "a", "embedding": ["1"]}',
    '{"id": "a", "embedding": []}', '{"id": "a", "embedding": null}', '{"id": "a", "embedding": [ -0 , 0.5\t]}',
    '{"id": "a", "embedding": [1e400]}', '{"id": "a", "embedding": [1.5E-3, -2e+2]}', '{"id": "a", "embedding": [1e-400]}',
    '{"id": "a", "embedding": [' + "9" * 400 + ']}', '{"id": "a", "embedding": [0.' + "1" * 400 + ']}',
    '{"id": "a", "embedding": [[1]]}', '{"id": "a", "embedding": [1, null]}', '{"id": "a", "embedding": {"x": 1}}',
    '{"id": "a", "embedding": "[1]"}', '{"id": "a", "source_files": ["a", 1]}',
    '{"id": "a", "tool_calls": [{"a": null}]}', '{"id": "a", "tool_calls": [1]}', '{"id": "a", "tool_calls": {}}',
    '{"id": "a", "provenance": {"source_file": "f"}}', '{"id": "a", "origin": {"path": "x"}}',
    '{"id": "a", "unknown_key": 1}', '{"id": "a", "id": "b"}', '{"id": "a", "text": "\\ud800 alone"}',
    '{"id": "a", "text": "\\ud83d\\ude00 \\n \\" \\u0000"}', '{"id": "a", "ground_truth": 42}',
    '{"id": "a"} trailing', '["id", "a"]', '"a"', '{"id": "a", "label": "chosen", "lifecycle_status": "expired"}',
]


@pytest.mark.parametrize("line", _LANE_LINES)
def test_the_fast_lane_takes_only_lines_the_record_model_takes_and_gives_the_same_values(line):
    # A shortcut may refuse a line (the full path then decides), never take one differently from pydantic.
    origin = Origin(path="logs.jsonl", line=3)
    fast = fast_record(line.encode(), origin)
    if fast is None:
        return
    assert isinstance(fast, StoredRecord)
    want = Record.model_validate_json(line)
    object.__setattr__(want, "origin", origin)
    got = {name: getattr(fast, name) for name in RECORD_FIELDS}
    assert got == want.__dict__
    assert [type(v) for v in got.values()] == [type(v) for v in want.__dict__.values()]
    assert fast.to_json() == want.to_json() and fast.as_record() == want


def test_the_fast_lane_takes_the_common_lines():
    # (tests/test_plan.py checks that the source gives the same records and rows through the lane as without it)
    taken = [line for line in _LANE_LINES if fast_record(line.encode(), Origin(path="x", line=1)) is not None]
    assert _LANE_LINES[0] in taken and _LANE_LINES[1] in taken and len(taken) >= 20

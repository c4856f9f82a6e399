"""`source=parquet` and `output.format=parquet`: the same data in and out as JSONL, with a stable schema."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import REPO, compose_config, read_jsonl, run_cli, run_pipeline, write_jsonl

from distill.config import build_settings
from distill.errors import ConfigError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SFT_SCHEMA = json.loads((REPO / "schemas" / "sft_chat_line.schema.json").read_text())


def turn(row_id: str, session: str, minute: int, role: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": row_id,
        "session_id": session,
        "created_at": f"2026-02-01T08:{minute:02d}:00Z",
        "role": role,
        "text": text,
        "category": "accepted",
        **extra,
    }


def sessions(count: int, rewards: bool = True) -> list[dict[str, Any]]:
    rows = []
    for n in range(count):
        rows.append(turn(f"u{n}", f"s{n}", 2 * n, "user", f"question {n}"))
        extra = {"reward": n / 10} if rewards else {}
        calls = [{"id": f"c{n}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]
        rows.append(turn(f"a{n}", f"s{n}", 2 * n + 1, "assistant", f"answer {n}", tool_calls=calls, **extra))
        # The call's reply (same minute, after `a{n}` by id): a call without it would be a broken tool chain.
        rows.append(turn(f"t{n}", f"s{n}", 2 * n + 1, "tool", f"result {n}", tool_call_id=f"c{n}"))
    return rows


def write_parquet_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # pa.array infers one struct type over every row's keys (Table.from_pylist would take the first row's only).
    pq.write_table(pa.Table.from_batches([pa.RecordBatch.from_struct_array(pa.array(rows))]), path)
    return path


def decoded(value: Any, field: Any) -> Any:
    """A Parquet cell back as JSON: JSON-text columns parsed, keys a line left out (null struct fields) dropped."""
    if value is None:
        return None
    if field.metadata and field.metadata.get(b"distill.encoding") == b"json":
        return json.loads(value)
    if pa.types.is_struct(field.type):
        pairs = ((field.type.field(i), value[field.type.field(i).name]) for i in range(field.type.num_fields))
        return {sub.name: decoded(v, sub) for sub, v in pairs if v is not None}
    if pa.types.is_list(field.type):
        return [decoded(item, field.type.value_field) for item in value]
    return value


def parquet_lines(path: Path) -> list[dict[str, Any]]:
    table = pq.read_table(path)
    return [
        {field.name: decoded(row[field.name], field) for field in table.schema if row[field.name] is not None}
        for row in table.to_pylist()
    ]


def test_parquet_in_and_out_matches_jsonl_in_and_out(tmp_path: Path) -> None:
    rows = sessions(24)  # sessions s19 and s21 fall on the eval side
    write_jsonl(tmp_path / "in" / "log.jsonl", rows)
    write_parquet_rows(tmp_path / "in" / "log.parquet", rows)
    from_jsonl = run_pipeline(tmp_path / "j", [f"source.path={tmp_path / 'in' / 'log.jsonl'}"])
    from_parquet = run_pipeline(
        tmp_path / "p", ["source=parquet", f"source.path={tmp_path / 'in' / 'log.parquet'}", "output.format=parquet"]
    )

    assert from_parquet.manifest["split"]["examples"] == from_jsonl.manifest["split"]["examples"]
    for side in ("train", "eval"):
        expected = read_jsonl(tmp_path / "j" / f"sft.{side}.jsonl")
        got = parquet_lines(tmp_path / "p" / f"sft.{side}.parquet")
        assert expected and got == expected  # same lines, same order
        for line in got:
            jsonschema.validate(line, SFT_SCHEMA)
    assert from_parquet.manifest["counts"] == from_jsonl.manifest["counts"]
    assert {e["path"] for e in from_parquet.manifest["outputs"]} >= {"sft.train.parquet", "sft.eval.parquet"}


def test_parquet_output_is_byte_identical_on_rerun(tmp_path: Path) -> None:
    source = write_parquet_rows(tmp_path / "in" / "log.parquet", sessions(8))
    overrides = ["source=parquet", f"source.path={source}", "output.format=parquet", "split=none"]
    first = run_pipeline(tmp_path / "one", overrides)
    second = run_pipeline(tmp_path / "two", overrides)

    assert (tmp_path / "one" / "sft.parquet").read_bytes() == (tmp_path / "two" / "sft.parquet").read_bytes()
    entry = next(e for e in first.manifest["outputs"] if e["path"] == "sft.parquet")
    assert entry == next(e for e in second.manifest["outputs"] if e["path"] == "sft.parquet")
    assert entry["sha256"] == hashlib.sha256((tmp_path / "one" / "sft.parquet").read_bytes()).hexdigest()
    assert entry["rows"] == 8


def test_parquet_schema_does_not_depend_on_the_rows(tmp_path: Path) -> None:
    with_rewards = write_parquet_rows(tmp_path / "a" / "log.parquet", sessions(3, rewards=True))
    without = write_parquet_rows(tmp_path / "b" / "log.parquet", sessions(3, rewards=False))
    for name, source in (("ra", with_rewards), ("rb", without)):
        overrides = ["source=parquet", f"source.path={source}", "output.format=parquet", "split=none"]
        run_pipeline(tmp_path / name, overrides)

    schema_a = pq.read_schema(tmp_path / "ra" / "sft.parquet")
    schema_b = pq.read_schema(tmp_path / "rb" / "sft.parquet")
    assert schema_a.equals(schema_b, check_metadata=True)
    assert schema_a.names == ["id", "messages", "provenance", "reward"]
    assert pq.read_table(tmp_path / "rb" / "sft.parquet").column("reward").null_count == 3


def test_a_directory_of_parquet_files_is_read_in_order_with_row_origins(tmp_path: Path) -> None:
    first = write_parquet_rows(tmp_path / "in" / "a.parquet", sessions(2))
    bad = [turn("x1", "s9", 50, "user", "hi"), turn("x2", "s9", 51, "wizard", "not a role")]
    second = write_parquet_rows(tmp_path / "in" / "nested" / "b.parquet", bad)
    result = run_pipeline(tmp_path / "out", ["source=parquet", f"source.path={tmp_path / 'in'}", "split=none"])

    assert result.manifest["inputs"] == [
        {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": rows}
        for path, rows in ((first, 6), (second, 2))
    ]
    quarantine = {row["record_id"]: row for row in read_jsonl(tmp_path / "out" / "quarantine.jsonl")}
    assert quarantine["x2"]["reason"] == "schema_violation"
    assert quarantine["x2"]["origin"] == {"path": "nested/b.parquet", "row": 1}


def test_a_row_without_an_id_gets_one_from_its_relative_origin(tmp_path: Path) -> None:
    rows = [{**turn("", "s1", 0, "user", "q")}, {**turn("", "s1", 1, "assistant", "a")}]
    for row in rows:
        del row["id"]
    write_parquet_rows(tmp_path / "in" / "log.parquet", rows)
    run_pipeline(tmp_path / "out", ["source=parquet", f"source.path={tmp_path / 'in'}", "split=none"])

    (line,) = read_jsonl(tmp_path / "out" / "sft.jsonl")
    assert line["provenance"]["record_ids"] == ["log.parquet#0", "log.parquet#1"]


def test_a_file_that_is_not_parquet_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(ConfigError) as caught:
        build_settings(compose_config(["source=parquet", f"source.path={broken}"]))
    (problem,) = caught.value.problems
    assert problem.startswith(f"source.path: {broken} is not a readable Parquet file")


def test_cli_reads_parquet_and_writes_parquet(tmp_path: Path) -> None:
    source = write_parquet_rows(tmp_path / "log.parquet", sessions(4))
    run_dir = tmp_path / "run"
    done = run_cli(
        ["source=parquet", f"source.path={source}", "output.format=parquet", "split=none", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert len(parquet_lines(run_dir / "sft.parquet")) == 4
    assert not (run_dir / "sft.jsonl").exists()


def test_binary_and_decimal_columns_survive_into_metadata_and_quarantine(tmp_path: Path) -> None:
    table = pa.table({
        "id": ["u1", "a1", "a2"],
        "session_id": ["s1", "s1", "s1"],
        "created_at": ["2026-02-01T08:00:00Z", "2026-02-01T08:01:00Z", "2026-02-01T08:02:00Z"],
        "role": ["user", "assistant", "wizard"],
        "text": ["q", "a", "bad role"],
        "blob": pa.array([b"ok", b"\xff\x00", b"\xfe"], pa.binary()),
        "price": pa.array([Decimal("1.50"), Decimal("2.25"), Decimal("0")], pa.decimal128(5, 2)),
    })
    pq.write_table(table, tmp_path / "log.parquet")
    run_pipeline(tmp_path / "out", ["source=parquet", f"source.path={tmp_path / 'log.parquet'}", "split=none"])

    (row,) = read_jsonl(tmp_path / "out" / "quarantine.jsonl")
    assert (row["record_id"], row["reason"]) == ("a2", "schema_violation")
    assert (row["record"]["blob"], row["record"]["price"]) == ("base64:/g==", 0.0)
    (line,) = read_jsonl(tmp_path / "out" / "sft.jsonl")
    assert line["provenance"]["record_ids"] == ["u1", "a1"]


def test_a_timestamp_beyond_year_9999_quarantines_its_row_and_the_batch_is_still_read(tmp_path: Path) -> None:
    table = pa.table({
        "id": ["u1", "a1", "a2"],
        "session_id": ["s1", "s1", "s1"],
        "created_at": pa.array([1_800_000_000, 1_800_000_001, 253_402_300_800], pa.timestamp("s")),  # 10000-01-01
        "role": ["user", "assistant", "assistant"],
        "text": ["q", "a", "far future"],
    })
    pq.write_table(table, tmp_path / "log.parquet")
    run_pipeline(tmp_path / "out", ["source=parquet", f"source.path={tmp_path / 'log.parquet'}", "split=none"])

    (row,) = read_jsonl(tmp_path / "out" / "quarantine.jsonl")
    assert (row["record_id"], row["reason"]) == ("log.parquet#2", "schema_violation")
    assert row["origin"] == {"path": "log.parquet", "row": 2}
    assert row["errors"] == ["created_at: date value out of range"]
    assert row["record"]["id"] == "a2" and row["record"]["created_at"].startswith("10000-01-01 00:00:00")
    (line,) = read_jsonl(tmp_path / "out" / "sft.jsonl")
    assert line["provenance"]["record_ids"] == ["u1", "a1"]


def test_layout_keeps_undeclared_keys_of_an_open_schema_and_coerces_whole_floats() -> None:
    from distill.output.parquet_schema import table_layout

    open_schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "count": {"type": "integer"},
            "tags": {"type": "array", "items": {"enum": ["a", "b", None]}},
            "meta": {"type": "object"},
        },
    }
    layout = table_layout(open_schema, "open_line", pa)
    row = layout.row({"id": "x", "count": 2.0, "tags": ["a", None], "meta": {"z": 1, "a": [2]}, "more": True})
    table = pa.Table.from_pylist([row], schema=layout.arrow_schema)

    assert table.schema.names == ["count", "id", "meta", "tags", "_extra"]
    assert table.to_pylist() == [
        {"count": 2, "id": "x", "meta": '{"a":[2],"z":1}', "tags": ["a", None], "_extra": '{"more":true}'}
    ]
    assert table.schema.field("meta").metadata == {b"distill.encoding": b"json"}
    assert table.schema.metadata == {b"distill.schema": b"open_line"}


def test_a_parquet_file_is_cut_into_runs_of_row_groups_with_the_same_rows_origins_and_bytes(tmp_path: Path) -> None:
    """Row groups are the map's shards: origins and `<file>#<row>` ids count rows from the file's start, the inputs
    add up to the whole file, and the outputs are those of reading the file whole."""
    from distill.sources.parquet import ParquetParams, ParquetSource

    rows = sessions(40)
    rows[7] = {**rows[7], "role": "wizard"}  # quarantined: its origin names its row in the whole file
    for row in rows[30:33]:
        del row["id"]
    path = tmp_path / "in" / "log.parquet"
    path.parent.mkdir(parents=True)
    table = pa.Table.from_batches([pa.RecordBatch.from_struct_array(pa.array(rows))])
    pq.write_table(table, path, row_group_size=10)

    source = ParquetSource(ParquetParams(kind="parquet", path=str(path)))
    shards = source.shards(1)
    assert [(s.row_groups, s.first_row) for s in shards] == [((i, i + 1), 10 * i) for i in range(12)]

    outputs = []
    for name, executor in (("whole", ["executor.workers=1", "executor.shard_mb=1024"]),
                           ("cut", ["executor.workers=2", "executor.partitions=3", "executor.shard_mb=0.000001"])):
        out = tmp_path / name
        result = run_pipeline(out, ["source=parquet", f"source.path={path}", *executor])
        assert result.manifest["inputs"] == [
            {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": 120}
        ]
        outputs.append({f.name: f.read_bytes() for f in sorted(out.iterdir()) if f.suffix == ".jsonl" or f.name == "stats.json"})
    assert outputs[0] == outputs[1]
    quarantine = {row["record_id"]: row for row in read_jsonl(tmp_path / "cut" / "quarantine.jsonl")}
    assert quarantine[rows[7]["id"]]["origin"] == {"path": "log.parquet", "row": 7}
    exported = {i for line in read_jsonl(tmp_path / "cut" / "sft.train.jsonl") for i in line["provenance"]["record_ids"]}
    exported |= {i for line in read_jsonl(tmp_path / "cut" / "sft.eval.jsonl") for i in line["provenance"]["record_ids"]}
    assert {"log.parquet#30", "log.parquet#31", "log.parquet#32"} <= exported | set(quarantine)

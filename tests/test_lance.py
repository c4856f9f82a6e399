"""`source=lance`: a real Lance dataset with two versions, read at one of them (time travel)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
from helpers import REPO, compose_config, read_jsonl, run_cli, run_pipeline

from distill.config import build_settings
from distill.errors import ConfigError
from distill.record import Record

lance = pytest.importorskip("lance")
pa = pytest.importorskip("pyarrow")

EMBEDDING_DIM = 4
CONTEXT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("external_id", pa.string()),
    ("run_id", pa.string()),
    ("bot_id", pa.string()),
    ("session_id", pa.string()),
    ("tenant", pa.string()),
    ("source", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("role", pa.string()),
    ("state_metadata", pa.struct([("tokens_used", pa.int64()), ("latency_ms", pa.int64())])),
    ("metadata", pa.string()),
    ("lifecycle_status", pa.string()),
    ("supersedes_id", pa.string()),
    ("superseded_by_id", pa.string()),
    ("content_type", pa.string()),
    ("text_payload", pa.string()),
    ("embedding", pa.list_(pa.float32(), EMBEDDING_DIM)),
])


def context_row(row_id: str, session: str, minute: int, role: str, text: str, **extra) -> dict:
    row = {
        "id": row_id,
        "external_id": f"ext-{row_id}",
        "run_id": f"run-{session}",
        "bot_id": "bot-1",
        "session_id": session,
        "tenant": "acme",
        "source": "context-store",
        "created_at": datetime(2026, 1, 1, 12, minute, tzinfo=timezone.utc),
        "role": role,
        "state_metadata": {"tokens_used": len(text.split()), "latency_ms": 40 + minute},
        "metadata": json.dumps({"category": "accepted", "channel": "web"}),
        "lifecycle_status": "active",
        "supersedes_id": None,
        "superseded_by_id": None,
        "content_type": "text/plain",
        "text_payload": text,
        "embedding": [0.5, 0.25, float(minute), 1.0],
    }
    row.update(extra)
    return row


VERSION_1 = [
    context_row("u1", "s1", 0, "user", "How do I reset my password?"),
    context_row("a1", "s1", 1, "assistant", "Open settings, then Security, then Reset."),
    context_row("u2", "s2", 2, "user", "What is the refund window?"),
    context_row("a2-old", "s2", 3, "assistant", "Refunds within 7 days.", superseded_by_id="a2"),
    context_row("a2", "s2", 4, "assistant", "Refunds within 30 days.", supersedes_id="a2-old"),
]
VERSION_2 = [
    context_row("u3", "s3", 5, "user", "Do you ship to Norway?"),
    context_row("a3", "s3", 6, "assistant", "Yes, within five working days."),
]


def write_version(uri: Path, rows: list[dict], mode: str = "create") -> int:
    dataset = lance.write_dataset(pa.Table.from_pylist(rows, schema=CONTEXT_SCHEMA), str(uri), mode=mode)
    return dataset.version


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A Lance dataset in the context-record layout: version 1 holds two sessions, version 2 adds a third."""
    uri = tmp_path / "context.lance"
    assert write_version(uri, VERSION_1) == 1
    assert write_version(uri, VERSION_2, mode="append") == 2
    return uri


def exported_record_ids(output_dir: Path) -> set[str]:
    return {rid for line in read_jsonl(output_dir / "sft.jsonl") for rid in line["provenance"]["record_ids"]}


def quarantined_ids(output_dir: Path) -> set[str]:
    return {row["record_id"] for row in read_jsonl(output_dir / "quarantine.jsonl")}


def test_version_1_ignores_rows_added_in_version_2(store: Path, tmp_path: Path) -> None:
    result = run_pipeline(tmp_path / "v1", ["source=lance", f"source.uri={store}", "source.version=1", "split=none"])

    seen = exported_record_ids(tmp_path / "v1") | quarantined_ids(tmp_path / "v1")
    assert seen == {row["id"] for row in VERSION_1}
    assert result.manifest["inputs"] == [{"uri": str(store.resolve()), "version": 1, "rows": len(VERSION_1)}]
    assert result.manifest["counts"]["input_rows"] == len(VERSION_1)


def test_every_line_names_the_store_and_version_it_came_from(store: Path, tmp_path: Path) -> None:
    run_pipeline(tmp_path / "v1", ["source=lance", f"source.uri={store}", "source.version=1", "split=none"])

    lines = read_jsonl(tmp_path / "v1" / "sft.jsonl")
    assert lines
    for line in lines:
        provenance = line["provenance"]
        assert (provenance["source_uri"], provenance["source_version"]) == ("context.lance", 1)
        assert provenance["external_ids"] == [f"ext-{rid}" for rid in provenance["record_ids"]]
        assert (provenance["tenant"], provenance["source"], provenance["bot_id"]) == ("acme", "context-store", "bot-1")
    card = (tmp_path / "v1" / "README.md").read_text("utf-8")
    assert f"| `{store.resolve()}` | version 1 | 5 |" in card


def test_latest_is_resolved_to_its_version_number(store: Path, tmp_path: Path) -> None:
    result = run_pipeline(tmp_path / "latest", ["source=lance", f"source.uri={store}", "split=none"])

    assert result.manifest["config"]["source"]["version"] is None
    assert result.manifest["inputs"] == [{"uri": str(store.resolve()), "version": 2, "rows": 7}]
    assert {"u3", "a3"} <= exported_record_ids(tmp_path / "latest")


def test_a_pinned_version_reproduces_the_same_bytes_after_the_store_moved_on(tmp_path: Path) -> None:
    uri = tmp_path / "moving.lance"
    write_version(uri, VERSION_1)
    overrides = ["source=lance", f"source.uri={uri}", "source.version=1", "split=none"]
    run_pipeline(tmp_path / "before", overrides)
    write_version(uri, VERSION_2, mode="append")
    run_pipeline(tmp_path / "after", overrides)

    for name in ("sft.jsonl", "quarantine.jsonl"):
        assert (tmp_path / "before" / name).read_bytes() == (tmp_path / "after" / name).read_bytes()


def test_context_layout_preset_maps_columns_onto_the_record(store: Path) -> None:
    settings = build_settings(compose_config(["source=lance", f"source.uri={store}", "source.version=1"]))
    records = {parsed.id: parsed for parsed in settings.source.read()}

    answer = records["a1"]
    assert isinstance(answer, Record)
    assert answer.text == "Open settings, then Security, then Reset."
    assert answer.tokens_used == 6
    assert answer.category.value == "accepted"  # from the JSON-encoded metadata column
    assert answer.created_at == datetime(2026, 1, 1, 12, 1, tzinfo=timezone.utc)
    assert answer.embedding == [0.5, 0.25, 1.0, 1.0]
    # Columns not read whole land in metadata, next to the decoded metadata JSON.
    assert answer.metadata == {
        "category": "accepted",
        "channel": "web",
        "content_type": "text/plain",
        "state_metadata": {"tokens_used": 6, "latency_ms": 41},
    }
    assert answer.origin.to_json() == {"uri": "context.lance", "version": 1, "row": 1}
    assert records["a2-old"].superseded_by_id == "a2"


def test_a_row_with_superseded_by_id_is_dropped_by_lifecycle(store: Path, tmp_path: Path) -> None:
    run_pipeline(tmp_path / "out", ["source=lance", f"source.uri={store}", "source.version=1", "split=none"])

    rows = {row["record_id"]: row for row in read_jsonl(tmp_path / "out" / "quarantine.jsonl")}
    assert rows["a2-old"]["reason"] == "lifecycle"
    assert rows["a2-old"]["origin"] == {"uri": "context.lance", "version": 1, "row": 3}


def test_a_bad_json_metadata_cell_quarantines_only_its_row(tmp_path: Path) -> None:
    uri = tmp_path / "bad.lance"
    write_version(uri, [*VERSION_1[:2], context_row("a9", "s1", 9, "assistant", "x", metadata="{not json")])
    run_pipeline(tmp_path / "out", ["source=lance", f"source.uri={uri}", "split=none"])

    rows = read_jsonl(tmp_path / "out" / "quarantine.jsonl")
    assert [(row["record_id"], row["reason"]) for row in rows] == [("bad.lance#2", "schema_violation")]
    assert "metadata" in rows[0]["errors"][0]
    assert exported_record_ids(tmp_path / "out") == {"u1", "a1"}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [(["source.version=9"], "source.version"), (["source.version=0"], "source.version")],
)
def test_an_unknown_version_is_a_config_error(store: Path, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings(compose_config(["source=lance", f"source.uri={store}", *overrides]))
    assert all(problem.startswith(f"{key}:") for problem in caught.value.problems)


def test_a_missing_dataset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings(compose_config(["source=lance", f"source.uri={tmp_path / 'nowhere.lance'}"]))
    assert caught.value.problems == [f"source.uri: no Lance dataset at {tmp_path / 'nowhere.lance'}"]


def test_cli_exports_version_1(store: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "cli"
    done = run_cli(
        ["source=lance", f"source.uri={store}", "source.version=1", "task=sft", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["inputs"] == [{"uri": str(store.resolve()), "version": 1, "rows": len(VERSION_1)}]
    schema = json.loads((REPO / "schemas" / "manifest.schema.json").read_text())
    jsonschema.validate(manifest, schema)
    line_schema = json.loads((REPO / "schemas" / "sft_chat_line.schema.json").read_text())
    lines = [line for name in ("sft.train.jsonl", "sft.eval.jsonl") for line in read_jsonl(run_dir / name)]
    for line in lines:
        jsonschema.validate(line, line_schema)
    exported = {rid for line in lines for rid in line["provenance"]["record_ids"]}
    quarantined = {row["record_id"] for row in read_jsonl(run_dir / "quarantine.jsonl")}
    assert {"u1", "a1"} <= exported
    assert exported | quarantined == {row["id"] for row in VERSION_1}


def test_cli_reports_a_bad_version_in_one_line(store: Path, tmp_path: Path) -> None:
    overrides = ["source=lance", f"source.uri={store}", "source.version=5", f"hydra.run.dir={tmp_path / 'run'}"]
    done = run_cli(overrides, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"distill: error: source.version: {store} has no version 5 (versions: 1..2)"


def test_a_directory_that_is_not_a_lance_dataset_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError) as caught:
        build_settings(compose_config(["source=lance", f"source.uri={tmp_path / 'plain'}"]))
    (problem,) = caught.value.problems
    assert problem.startswith(f"source.uri: cannot open a Lance dataset at {tmp_path / 'plain'}")


def test_fragments_are_the_maps_shards_with_the_same_rows_origins_and_bytes(tmp_path: Path) -> None:
    """A dataset written in several fragments is mapped fragment by fragment: rows are numbered from the dataset's
    start, the inputs add up to the whole version, and the outputs are those of one whole read."""
    from distill.sources.lance import LanceParams, LanceSource

    uri = tmp_path / "many.lance"
    rows = [
        context_row(f"{role[0]}{n}", f"s{n}", n % 50, role, f"{role} turn {n}", id=None if n == 13 else f"{role[0]}{n}")
        for n in range(20) for role in ("user", "assistant")
    ]
    rows[9]["role"] = "wizard"  # quarantined: its origin names its row in the whole version
    lance.write_dataset(pa.Table.from_pylist(rows, schema=CONTEXT_SCHEMA), str(uri), max_rows_per_file=6)
    shards = LanceSource(LanceParams(kind="lance", uri=str(uri))).shards(1)
    assert [(shard.first_row, len(shard.fragments)) for shard in shards] == [(6 * i, 1) for i in range(7)]

    outputs = []
    for name, executor in (("whole", ["executor.workers=1", "executor.shard_mb=1024"]),
                           ("cut", ["executor.workers=2", "executor.partitions=3", "executor.shard_mb=0.000001"])):
        result = run_pipeline(tmp_path / name, ["source=lance", f"source.uri={uri}", "split=none", *executor])
        assert result.manifest["inputs"] == [{"uri": str(uri.resolve()), "version": 1, "rows": 40}]
        outputs.append({f: (tmp_path / name / f).read_bytes() for f in ("sft.jsonl", "quarantine.jsonl", "stats.json")})
    assert outputs[0] == outputs[1]
    quarantine = {row["record_id"]: row for row in read_jsonl(tmp_path / "cut" / "quarantine.jsonl")}
    assert quarantine[rows[9]["id"]]["origin"] == {"uri": "many.lance", "version": 1, "row": 9}
    assert "many.lance#26" in exported_record_ids(tmp_path / "cut") | set(quarantine)

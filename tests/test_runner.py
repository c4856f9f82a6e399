"""The whole run: the ledger closes, reruns are byte-identical, and every output file matches its schema."""

from __future__ import annotations

import random

import pytest
from helpers import read_jsonl, run_pipeline, write_jsonl
from jsonschema import Draft202012Validator

from distill.quarantine import AccountingError, Ledger
from distill.validation import load_schema

DATA_FILES = ("sft.train.jsonl", "sft.eval.jsonl", "quarantine.jsonl")


def messy_rows(n_sessions=60, seed=5):
    """Sessions with alternatives, gaps, bad categories, lifecycle drops, duplicates and malformed lines."""
    rnd = random.Random(seed)
    rows = []
    for s in range(n_sessions):
        t = s * 100
        rows.append({"id": f"s{s}-u0", "session_id": f"s{s}", "role": "user", "text": f"question {s % 45}", "created_at": t})
        for k in range(rnd.randint(1, 3)):
            rows.append({
                "id": f"s{s}-a0-{k}", "session_id": f"s{s}", "role": "assistant", "text": f"answer {s % 45}.{k}",
                "created_at": t + 1 + k, "group_id": f"s{s}-g0", "reward": rnd.choice([None, 0.1, 0.5, 0.9]),
                "category": rnd.choice(["accepted", "accepted", "partially_accepted", "rejected", "needs_human_review", None]),
                "lifecycle_status": rnd.choice(["active"] * 8 + ["superseded", "tombstoned"]),
            })
        rows.append({"id": f"s{s}-u1", "session_id": f"s{s}", "role": "user", "text": rnd.choice(["more?", " ", "thanks"]), "created_at": t + 10})
        rows.append({"id": f"s{s}-a1", "session_id": f"s{s}", "role": "assistant", "text": f"sure {s}", "created_at": t + 11})
    rnd.shuffle(rows)
    rows[3:3] = [b"{not json", b'{"id": "utf", "text": "\xff"}', b'"a string"', {"id": "bad", "rank": 0}, {"id": "s0-u0", "text": "dup id"}]
    return rows


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    path = write_jsonl(root / "logs.jsonl", messy_rows())
    overrides = [f"source.path={path}", "split.eval_fraction=0.3"]
    first = run_pipeline(root / "run1", overrides)
    second = run_pipeline(root / "run2", overrides)
    return root, first, second


def test_accounting_closes_on_a_run_full_of_bad_rows(messy_run):
    root, result, _ = messy_run
    counts = result.manifest["counts"]
    exported = {rid for name in DATA_FILES[:2] for line in read_jsonl(root / "run1" / name) for rid in line["provenance"]["record_ids"]}
    rows = read_jsonl(root / "run1" / "quarantine.jsonl")
    quarantined = [row["record_id"] for row in rows if row["step"] != "parse"]
    assert counts["input_rows"] == len(messy_rows())
    assert len(quarantined) == len(set(quarantined))
    assert len(rows) == counts["quarantined_rows"]
    assert len(exported) == counts["exported_records"]
    assert not exported & set(quarantined)
    assert counts["input_rows"] == counts["exported_records"] + counts["quarantined_rows"]
    reasons = set(result.manifest["quarantine"])
    assert {"invalid_json", "invalid_utf8", "schema_violation", "duplicate", "lifecycle", "empty_content",
            "unsafe_sft_category", "not_selected", "after_gap"} <= reasons


def test_two_runs_with_the_same_config_are_byte_identical(messy_run):
    root, first, second = messy_run
    for name in (*DATA_FILES, "stats.json"):
        assert (root / "run1" / name).read_bytes() == (root / "run2" / name).read_bytes(), name
    assert first.manifest["config_sha256"] == second.manifest["config_sha256"]


def test_output_rows_are_sorted_and_ids_unique(messy_run):
    root, _, _ = messy_run
    for name in DATA_FILES[:2]:
        lines = read_jsonl(root / "run1" / name)
        starts = [(line["provenance"].get("created_at_start", ""), line["id"]) for line in lines]
        assert starts == sorted(starts)
        assert len({line["id"] for line in lines}) == len(lines)


@pytest.mark.parametrize(
    ("schema", "files"),
    [("sft_chat_line", ["sft.train.jsonl", "sft.eval.jsonl"]), ("quarantine_row", ["quarantine.jsonl"])],
)
def test_every_output_line_validates_against_its_schema(messy_run, schema, files):
    root, _, _ = messy_run
    validator = Draft202012Validator(load_schema(schema))
    rows = [row for name in files for row in read_jsonl(root / "run1" / name)]
    assert rows
    for row in rows:
        validator.validate(row)


def test_manifest_and_stats_validate_and_carry_the_contract_keys(messy_run):
    import json

    root, result, _ = messy_run
    manifest = json.loads((root / "run1" / "manifest.json").read_text())
    stats = json.loads((root / "run1" / "stats.json").read_text())
    Draft202012Validator(load_schema("manifest")).validate(manifest)
    Draft202012Validator(load_schema("stats")).validate(stats)
    for output in manifest["outputs"]:
        import hashlib

        assert hashlib.sha256((root / "run1" / output["path"]).read_bytes()).hexdigest() == output["sha256"]
    assert manifest["choices"]["curation.order"] == ["lifecycle", "non_empty_text", "exact_dedup"]
    assert [s["step"] for s in manifest["stages"]] == ["parse", "lifecycle", "non_empty_text", "exact_dedup", "firewall", "task", "write"]
    assert set(stats["files"]) == {"sft.train.jsonl", "sft.eval.jsonl"}
    assert stats["files"]["sft.train.jsonl"]["examples"] == len(read_jsonl(root / "run1" / "sft.train.jsonl"))


def test_schema_files_are_valid_json_schema():
    from importlib import resources

    names = [p.name.removesuffix(".schema.json") for p in resources.files("distill.schemas").iterdir() if p.name.endswith(".schema.json")]
    assert {"input_record", "sft_chat_line", "quarantine_row", "manifest", "stats"} <= set(names)
    for name in names:
        Draft202012Validator.check_schema(load_schema(name))


def test_the_write_check_passes_what_the_schema_takes_and_words_what_it_refuses_as_fastjsonschema_does():
    import fastjsonschema

    from distill.validation import schema_errors

    line = {
        "id": "sft-0123456789abcdef", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "provenance": {"record_ids": ["u", "a"], "categories": [None, "accepted"]},
    }
    refused = [
        {**line, "provenance": {"record_ids": ["u", "a"], "categories": [None, "rejected"]}},
        {**line, "messages": [{"role": "user", "content": "q"}]},
        {**line, "id": "sft-01"},
        {**line, "extra": 1},
    ]
    assert schema_errors("sft_chat_line", line) == []
    for value in refused:
        with pytest.raises(fastjsonschema.JsonSchemaValueException) as raised:
            fastjsonschema.compile(load_schema("sft_chat_line"))(value)
        assert schema_errors("sft_chat_line", value) == [raised.value.message]


def test_a_line_the_schema_rejects_is_quarantined_not_written(tmp_path, monkeypatch):
    from distill.tasks.conversation import Firewall

    monkeypatch.setattr(Firewall, "check", lambda self, record, completion=True: None)
    rows = [
        {"id": "u", "session_id": "s", "role": "user", "text": "q", "created_at": 1},
        {"id": "a", "session_id": "s", "role": "assistant", "text": "leak", "category": "rejected", "created_at": 2},
        {"id": "u2", "session_id": "t", "role": "user", "text": "q", "created_at": 3},
        {"id": "a2", "session_id": "t", "role": "assistant", "text": "fine", "category": "accepted", "created_at": 4},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_pipeline(tmp_path / "out", [f"source.path={path}", "split=none"])
    lines = read_jsonl(tmp_path / "out" / "sft.jsonl")
    assert [line["provenance"]["record_ids"] for line in lines] == [["u2", "a2"]]
    quarantine = {row["record_id"]: row for row in read_jsonl(tmp_path / "out" / "quarantine.jsonl")}
    assert {k: (v["step"], v["reason"]) for k, v in quarantine.items()} == {"u": ("write", "schema_violation"), "a": ("write", "schema_violation")}
    assert result.manifest["stages"][-1]["dropped"] == {"schema_violation": 2}


def test_dry_run_writes_only_the_manifest_and_quarantine(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "u", "role": "user", "text": "q"}, {"id": "a", "role": "assistant", "text": "a"}])
    result = run_pipeline(tmp_path / "out", [f"source.path={path}", "dry_run=true"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "quarantine.jsonl"]
    assert result.manifest["counts"]["examples"] == 1


def test_the_ledger_refuses_to_close_when_a_record_is_lost():
    ledger = Ledger(input_rows=2)
    with pytest.raises(AccountingError):
        ledger.close({"only-one"})

"""Task rag: one retrieval document per record; deterministic ids; dry runs."""

from __future__ import annotations

import json

import pytest

from distill.record import Record
from distill.tasks.rag import tags_of, title_of
from helpers import REPO, run_cli
from lakehouse_fixture import FIXTURE, INPUT_ROWS, dataset_lines, quarantine_by_record, run_lakehouse, schema_violations


def documents(result):
    return {line["source_run_id"]: line for line in dataset_lines(result, "rag")}


def test_document_shape(tmp_path):
    result = run_lakehouse(tmp_path, ["task=rag"])
    review = documents(result)["run-001"]
    text = "Finding 1 (high, 0.9): app.py swallows DB errors.\nPatch: re-raise after logging."
    assert review == {
        "id": review["id"],
        "title": "Finding 1 (high, 0.9): app.py swallows DB errors.",
        "content": text,
        "tags": ["task:scrum", "category:accepted", "role:reviewer", "model:qwen2.5-coder-7b", "file:src/app.py"],
        "source_run_id": "run-001",
        "source_category": "accepted",
        "embedding_text": text,
        "provenance": {
            "record_ids": ["run-001"], "categories": ["accepted"], "run_id": "run-001",
            "source_file": "data/_kb/scrum_reviews.jsonl", "line_offset": 1, "sig_hash": "58283de9327dbd6c",
            "created_at_start": "2026-03-01T11:00:00Z", "created_at_end": "2026-03-01T11:00:00Z",
        },
    }
    assert review["id"].startswith("rag-") and len(review["id"]) == 20
    assert documents(result)["run-013"]["tags"] == [
        "task:permit", "category:accepted", "role:executor", "model:llama-3.1-8b",
    ]
    assert schema_violations("rag_line", dataset_lines(result, "rag")) == []


def test_partial_is_in_review_only_on_request_rejected_never(tmp_path):
    default = documents(run_lakehouse(tmp_path / "default", ["task=rag"]))
    assert {"run-005", "run-016"} <= set(default)
    assert {"run-010", "run-012"} & set(default) == set()
    with_review = run_lakehouse(tmp_path / "review", ["task=rag", "task.include_review=true"])
    docs = documents(with_review)
    assert docs["run-010"]["source_category"] == "needs_human_review"
    assert "category:needs_human_review" in docs["run-012"]["tags"]
    quarantined = quarantine_by_record(with_review)
    assert {rid: quarantined[rid]["reason"] for rid in ("run-002", "run-003", "run-015", "run-019")} == dict.fromkeys(
        ("run-002", "run-003", "run-015", "run-019"), "unsafe_rag_category"
    )


def test_embedding_text_is_capped(tmp_path):
    docs = documents(run_lakehouse(tmp_path, ["task=rag", "task.embedding_text_max_chars=12"]))
    assert docs["run-001"]["embedding_text"] == "Finding 1 (h"
    assert docs["run-001"]["content"].startswith("Finding 1 (high")


def test_title_is_the_first_non_empty_line_cut_at_120_else_the_task_id():
    long_line = "x" * 130
    assert title_of(Record(id="a", text=f"\n  \n  {long_line}\nsecond"), 120) == "x" * 120
    assert title_of(Record(id="a", task_id="scrum:y", text=" \n "), 120) == "scrum:y"
    assert title_of(Record(id="a"), 120) == "a"


def test_tags_name_only_what_is_present():
    assert tags_of(Record(id="a", role="user")) == ["role:user"]
    assert tags_of(Record(id="a", task_id="plain", category="rejected")) == ["task:plain", "category:rejected"]


def test_reruns_reproduce_identical_files(tmp_path):
    first = run_lakehouse(tmp_path / "one", ["task=rag"])
    second = run_lakehouse(tmp_path / "two", ["task=rag"])
    for name in ("rag.jsonl", "quarantine.jsonl", "stats.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert [o["sha256"] for o in first.manifest["outputs"]] == [o["sha256"] for o in second.manifest["outputs"]]


def test_ids_are_content_hashes(tmp_path):
    first = documents(run_lakehouse(tmp_path / "one", ["task=rag"]))
    capped = documents(run_lakehouse(tmp_path / "two", ["task=rag", "task.embedding_text_max_chars=60"]))
    assert first["run-004"]["id"] != capped["run-004"]["id"]  # its embedding_text changed
    assert first["run-017"]["id"] == capped["run-017"]["id"]  # 49 characters: unchanged


@pytest.mark.parametrize("task", [["task=rag"], ["+experiment=lakehouse_instruction"]])
def test_dry_run_writes_only_the_manifest_and_the_quarantine(tmp_path, task):
    full = run_lakehouse(tmp_path / "full", task)
    dry = run_lakehouse(tmp_path / "dry", [*task, "dry_run=true"])
    assert sorted(p.name for p in (tmp_path / "dry").iterdir()) == ["manifest.json", "quarantine.jsonl"]
    assert dry.manifest["dry_run"] is True
    assert dry.manifest["counts"] == full.manifest["counts"]
    assert dry.manifest["stages"] == full.manifest["stages"]
    assert (tmp_path / "dry" / "quarantine.jsonl").read_bytes() == (tmp_path / "full" / "quarantine.jsonl").read_bytes()


def test_cli_rag_with_the_default_split(tmp_path):
    out = tmp_path / "run"
    done = run_cli(["source=lakehouse", "source.root=tests/fixtures/lakehouse", "task=rag", f"hydra.run.dir={out}"], cwd=REPO)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["input_rows"] == INPUT_ROWS
    written = sorted(p.name for p in out.glob("rag*.jsonl"))
    assert written == ["rag.eval.jsonl", "rag.train.jsonl"]
    assert sum(manifest["split"]["examples"].values()) == manifest["counts"]["examples"] == 12
    assert f"source.root={FIXTURE.relative_to(REPO)}" in manifest["command"]

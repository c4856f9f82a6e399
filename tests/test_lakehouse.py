"""The lakehouse source: partitions, the scored/evidence join, its quarantine reasons, and file_paths_exist."""

from __future__ import annotations

from datetime import datetime, timezone

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import distill.sources.lakehouse as lakehouse
from distill.config import build_settings
from distill.errors import ConfigError
from distill.quarantine import QuarantineRow
from distill.record import Record
from distill.sources.lakehouse import LakehouseParams, LakehouseSource
from distill.curation.steps.base import StepContext
from distill.curation.steps.file_paths_exist import FilePathsExist, FilePathsExistParams
from helpers import REPO, compose_config, read_jsonl, run_cli, write_jsonl
from lakehouse_fixture import (
    FIXTURE, INPUT_ROWS, REPO_ROOT, SCORED, quarantine_by_record, run_lakehouse, schema_violations,
)

pytest.importorskip("jsonschema")


def read_source(root: Path) -> list[Record | QuarantineRow]:
    return list(LakehouseSource(LakehouseParams(kind="lakehouse", root=str(root))).read())


def test_fixture_is_what_the_generator_writes(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_lakehouse", FIXTURE.parent / "make_lakehouse.py")
    make_lakehouse = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, make_lakehouse)  # dataclasses look their module up there
    spec.loader.exec_module(make_lakehouse)
    make_lakehouse.write_tree(tmp_path / "tree")
    written = sorted(p.relative_to(tmp_path / "tree") for p in (tmp_path / "tree").rglob("*") if p.is_file())
    committed = sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*") if p.is_file())
    assert written == committed
    for relative in written:
        assert (tmp_path / "tree" / relative).read_bytes() == (FIXTURE / relative).read_bytes(), relative


def test_join_maps_scored_run_and_evidence_onto_the_record():
    records = {p.id: p for p in read_source(FIXTURE) if isinstance(p, Record)}
    review = records["run-001"]
    assert review.run_id == "run-001"
    assert review.role.value == "assistant"
    assert review.category.value == "accepted"
    assert review.task_id == "scrum:src/app.py"
    assert review.text.startswith("Finding 1 (high, 0.9): app.py swallows DB errors.")
    assert review.source_files == ["src/app.py", "docs/PRD.md"]
    assert review.provenance.model_dump(exclude_none=True) == {
        "source_file": "data/_kb/scrum_reviews.jsonl", "line_offset": 1, "sig_hash": "58283de9327dbd6c",
    }
    assert review.metadata == {
        "model_role": "reviewer",
        "model_name": "qwen2.5-coder-7b",
        "retrieved_context": {"matrix_corpora": ["prd", "change_proposals"], "pathway_fingerprints_seen": 3},
        "reasons": ["cites the PRD section on error handling and gives a working patch"],
        "evidence_source_file": "data/_kb/scrum_reviews.jsonl",
        "recorded_at": "2026-03-01T11:00:00Z",
    }
    assert review.origin.path == "data/scored-runs/2026/03/01/runs.jsonl" and review.origin.line == 1
    assert records["run-013"].metadata["contractor"] == "Acme Builders"
    assert records["run-013"].created_at == datetime(2026, 3, 2, 11, 0, tzinfo=timezone.utc)  # the scorer's recorded_at


def test_partitions_are_walked_in_sorted_order_and_every_row_is_yielded():
    parsed = read_source(FIXTURE)
    origins = [(p.origin.path, p.origin.line) for p in parsed]
    assert origins == sorted(origins)
    assert len(parsed) == INPUT_ROWS
    assert {path for path, _ in origins} == {SCORED.format(day=d) for d in ("01", "02", "03", "04")}


def test_each_evidence_file_is_read_once(monkeypatch):
    opened: list[str] = []

    class CountingIndex(lakehouse.EvidenceIndex):
        def __init__(self, path: Path) -> None:
            opened.append(path.as_posix())
            super().__init__(path)

    monkeypatch.setattr(lakehouse, "EvidenceIndex", CountingIndex)
    read_source(FIXTURE)
    assert len(opened) == len(set(opened)) == 4


def test_source_quarantine_reasons(tmp_path):
    result = run_lakehouse(tmp_path)
    rows = read_jsonl(tmp_path / "quarantine.jsonl")
    at = {(row["origin"]["path"], row["origin"]["line"]): row for row in rows if row["step"] == "parse"}
    day1, day2, day3, day4 = (SCORED.format(day=d) for d in ("01", "02", "03", "04"))
    expected = {
        (day1, 7): "schema_violation",  # not JSON
        (day2, 9): "missing_provenance",  # no provenance
        (day2, 10): "missing_provenance",  # no sig_hash
        (day2, 11): "missing_provenance",  # no source_file
        (day2, 12): "missing_source_run_id",  # no evidence_run_id
        (day2, 13): "missing_source_run_id",  # no evidence row for run-905
        (day3, 6): "schema_violation",  # category 'approved'
        (day4, 1): "missing_source_run_id",  # the partition has no evidence file
    }
    assert {where: row["reason"] for where, row in at.items()} == expected
    assert at[(day2, 13)]["detail"] == {"run_id": "run-905"}
    assert schema_violations("quarantine_row", rows) == []
    assert schema_violations("manifest", [result.manifest]) == []
    assert result.manifest["counts"]["input_rows"] == INPUT_ROWS
    counts = result.manifest["counts"]
    assert counts["exported_records"] + counts["quarantined_rows"] == INPUT_ROWS


def test_manifest_lists_scored_and_evidence_files(tmp_path):
    inputs = run_lakehouse(tmp_path).manifest["inputs"]
    roles = sorted((Path(entry["path"]).relative_to(FIXTURE).as_posix(), entry["role"], entry["rows"]) for entry in inputs)
    assert roles == [
        ("data/evidence/2026/03/01/runs.jsonl", "evidence", 6),
        ("data/evidence/2026/03/02/runs.jsonl", "evidence", 9),
        ("data/evidence/2026/03/03/runs.jsonl", "evidence", 7),
        (SCORED.format(day="01"), "scored", 7),
        (SCORED.format(day="02"), "scored", 13),
        (SCORED.format(day="03"), "scored", 7),
        (SCORED.format(day="04"), "scored", 1),
    ]


def test_invalid_utf8_and_repeated_run_ids_keep_the_ledger_closed(tmp_path):
    provenance = {"source_file": "data/_kb/audits.jsonl", "line_offset": 1, "sig_hash": "abc"}
    day = "data/{}/2026/01/01/a.jsonl"
    write_jsonl(tmp_path / day.format("scored-runs"), [
        {"evidence_run_id": "r1", "evidence_task_id": "t-old", "category": "accepted",
         "provenance": {**provenance, "scorer": "judge-v2"}},
        {"evidence_run_id": "r1", "category": "accepted"},  # same run, no provenance
        b"\xff\xfe not utf-8",
        "[1, 2]",
    ])
    write_jsonl(tmp_path / day.format("evidence"), [{"run_id": "r1", "task_id": "t", "text": "hello"}])
    result = run_lakehouse(tmp_path / "out", [f"source.root={tmp_path}", "task=rag"])
    reasons = sorted(row["reason"] for row in read_jsonl(tmp_path / "out" / "quarantine.jsonl"))
    assert reasons == ["invalid_utf8", "missing_provenance", "schema_violation"]
    assert result.manifest["counts"] == {"input_rows": 4, "exported_records": 1, "quarantined_rows": 3, "examples": 1, "input_lines": 4}
    joined = next(p for p in read_source(tmp_path) if isinstance(p, Record))
    assert (joined.task_id, joined.metadata["evidence_task_id"]) == ("t", "t-old")  # a disagreement stays visible
    assert joined.provenance.model_dump(exclude_none=True)["scorer"] == "judge-v2"


def test_created_at_is_the_scorers_recorded_at(tmp_path):
    result = run_lakehouse(tmp_path, ["task=rag"])
    assert result.manifest["created_at_range"] == {"start": "2026-03-01T11:00:00Z", "end": "2026-03-03T14:00:00Z"}


def test_file_paths_exist_is_off_without_a_root(tmp_path):
    result = run_lakehouse(tmp_path / "off", ["task=rag"])
    assert "hallucinated_file_path" not in result.manifest["quarantine"]
    result = run_lakehouse(tmp_path / "null", ["task=rag", "++curation.steps.file_paths_exist.root=null"])
    assert "hallucinated_file_path" not in result.manifest["quarantine"]


def test_file_paths_exist_drops_records_citing_missing_files(tmp_path):
    result = run_lakehouse(tmp_path, ["task=rag", f"++curation.steps.file_paths_exist.root={REPO_ROOT}"])
    dropped = {rid: row for rid, row in quarantine_by_record(result).items() if row["reason"] == "hallucinated_file_path"}
    assert sorted(dropped) == ["run-018", "run-019"]  # src/ghost.py does not exist; ../outside.py leaves the root
    assert dropped["run-019"]["errors"] == ["no such file under root: ../outside.py"]
    assert dropped["run-018"]["step"] == "file_paths_exist"


def test_file_paths_exist_accepts_absolute_paths_inside_the_root(tmp_path):
    step = FilePathsExist("file_paths_exist", FilePathsExistParams(root=str(REPO_ROOT)), StepContext(str))
    inside = Record(id="a", source_files=[str(REPO_ROOT / "src/app.py"), "src/api/routes.py"])
    outside = Record(id="b", source_files=[str(FIXTURE / "data/scored-runs/2026/03/01/runs.jsonl")])
    directory = Record(id="c", source_files=["src"])
    verdicts = step.map_batch([inside, outside, directory, Record(id="d")])
    assert [getattr(v, "reason", "kept") for v in verdicts] == [
        "kept", "hallucinated_file_path", "hallucinated_file_path", "kept",
    ]


def test_bad_roots_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError) as error:
        build_settings(compose_config(["source=lakehouse", f"source.root={tmp_path}",
                                       f"++curation.steps.file_paths_exist.root={tmp_path / 'nope'}"]))
    assert sorted(problem.split(":")[0] for problem in error.value.problems) == [
        "curation.steps.file_paths_exist.root", "source.root",
    ]
    assert any("no data/scored-runs/ directory" in problem for problem in error.value.problems)
    assert any("not a directory" in problem for problem in error.value.problems)
    done = run_cli(["source=lakehouse", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["distill: error: source.root: Missing mandatory value: root"]


def test_cli_runs_every_lakehouse_task_from_the_repository(tmp_path):
    for name, task in {"rag": ["task=rag"], "sft": ["task=sft", "task.format=instruction"], "chat": ["task=sft"]}.items():
        out = tmp_path / name
        done = run_cli(["source=lakehouse", "source.root=tests/fixtures/lakehouse", *task, f"hydra.run.dir={out}"], cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["counts"]["input_rows"] == INPUT_ROWS
        assert manifest["counts"]["examples"] > 0

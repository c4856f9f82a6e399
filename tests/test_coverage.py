"""Task `coverage`: memory-coverage packages, checked file by file against the contract and their own manifest."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import REPO, compose_config, read_jsonl, run_cli, run_pipeline, write_jsonl

from distill.config import build_settings
from distill.errors import ConfigError

EXAMPLE = REPO / "examples" / "coverage"
CANDIDATES = EXAMPLE / "candidates.jsonl"
INSTANCES = EXAMPLE / "instances.json"
# The contract's files, written out here rather than imported, so a file the code stops writing fails the tests.
FILE_SCHEMAS = {
    "experiences.jsonl": "coverage_experience",
    "evidence_units.jsonl": "coverage_evidence_unit",
    "queries.jsonl": "coverage_query",
    "candidate_memories.jsonl": "coverage_candidate_memory",
    "coverage_matrix.jsonl": "coverage_matrix_cell",
    "annotation_decisions.jsonl": "coverage_annotation_decision",
    "instance.json": "coverage_instance",
    "candidate_generation_manifest.json": "coverage_generation_manifest",
}
HASHED_FILES = tuple(name for name in FILE_SCHEMAS if name != "candidate_generation_manifest.json")
FOLDER = re.compile(r"^[A-Za-z0-9_-]+-[0-9a-f]{8}$")


def schema(name: str) -> dict[str, Any]:
    return json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())


def export(output_dir: Path, source: Path = CANDIDATES, instances: Path | None = INSTANCES, *extra: str):
    overrides = [f"source.path={source}", "task=coverage", *extra]
    if instances is not None:
        overrides.append(f"task.instances={instances}")
    return run_pipeline(output_dir, overrides)


def packages(output_dir: Path) -> dict[str, Path]:
    """group -> package directory, from the export manifest."""
    manifest = json.loads((output_dir / "coverage" / "coverage_export_manifest.json").read_text())
    return {entry["group"]: output_dir / "coverage" / entry["directory"] for entry in manifest["packages"]}


def rows_of(package: Path, name: str) -> list[dict[str, Any]]:
    return read_jsonl(package / name)


def candidate(cid: str, task: str, session: str | None, coverage: dict[str, float], **facts: Any) -> dict[str, Any]:
    row = {"id": cid, "task_id": task, "text": f"memory {cid}", "metadata": {"coverage": coverage, **facts}}
    if session is not None:
        row["session_id"] = session
    return row


def test_every_package_file_matches_its_manifest_hash_and_its_schema(tmp_path: Path) -> None:
    result = export(tmp_path)

    found = packages(tmp_path)
    assert set(found) == {"billing-support", "trip-planner"}
    jsonschema.validate(
        json.loads((tmp_path / "coverage" / "coverage_export_manifest.json").read_text()),
        schema("coverage_export_manifest"),
    )
    for package in found.values():
        manifest = json.loads((package / "candidate_generation_manifest.json").read_text())
        assert manifest["split_hashes"] == {
            name: hashlib.sha256((package / name).read_bytes()).hexdigest() for name in HASHED_FILES
        }
        for name, schema_name in FILE_SCHEMAS.items():
            rows = read_jsonl(package / name) if name.endswith(".jsonl") else [json.loads((package / name).read_text())]
            assert rows, name
            for row in rows:
                jsonschema.validate(row, schema(schema_name))
        for name, count in manifest["counts"].items():
            assert len(read_jsonl(package / name)) == count
        config_hash = hashlib.sha256(
            json.dumps(manifest["generation_config"], sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        assert manifest["generation_config_hash"] == config_hash
        assert {row["generation_config_hash"] for row in rows_of(package, "candidate_memories.jsonl")} == {config_hash}
        assert "sparse" in (package / "README.md").read_text()
    # The run manifest hashes every file it wrote, package files included.
    for entry in result.manifest["outputs"]:
        assert hashlib.sha256((tmp_path / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    written = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "coverage").rglob("*") if p.is_file()}
    assert written <= {entry["path"] for entry in result.manifest["outputs"]}


def test_two_exports_are_byte_identical(tmp_path: Path) -> None:
    export(tmp_path / "one")
    export(tmp_path / "two")

    def tree(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = tree(tmp_path / "one" / "coverage")
    assert len(first) == 2 * 9 + 1
    assert first == tree(tmp_path / "two" / "coverage")


def test_the_ledger_closes_over_candidates(tmp_path: Path) -> None:
    result = export(tmp_path)

    used = {row["candidate_id"] for p in packages(tmp_path).values() for row in rows_of(p, "candidate_memories.jsonl")}
    quarantined = {row["record_id"]: row for row in read_jsonl(tmp_path / "quarantine.jsonl")}
    inputs = {row["id"] for row in read_jsonl(CANDIDATES)}
    assert used | set(quarantined) == inputs
    assert not used & set(quarantined)
    # The one candidate with a coverage value above 1 is no candidate.
    assert list(quarantined) == ["cand-t03"]
    assert quarantined["cand-t03"]["reason"] == "schema_violation"
    assert quarantined["cand-t03"]["errors"][0].startswith("metadata.coverage.current:seat:window")
    assert result.manifest["counts"]["exported_records"] == len(used)


def test_files_are_filled_and_sorted_as_the_contract_says(tmp_path: Path) -> None:
    export(tmp_path)
    billing = packages(tmp_path)["billing-support"]

    experiences = rows_of(billing, "experiences.jsonl")
    assert [(e["experience_id"], e["timestamp"]) for e in experiences] == [("sess-b1", 0), ("sess-b2", 2)]
    assert experiences[0]["text"] == "User: I'm on the Basic plan and want to upgrade to Pro."  # the raw span
    assert experiences[1]["source_span_ids"] == ["cand-b03", "cand-b04", "cand-b05"]
    assert experiences[1]["visible_unit_ids"] == [
        "acct:invalidates:plan_basic", "context:customer:timezone", "current:plan:pro",
    ]

    units = {u["unit_id"]: u for u in rows_of(billing, "evidence_units.jsonl")}
    assert list(units) == sorted(units)
    invalidation = units["acct:invalidates:plan_basic"]
    assert [s["span_id"] for s in invalidation["source_spans"]] == ["cand-b03", "cand-b04"]
    assert (invalidation["timestamp"], invalidation["unit_weight"], invalidation["proposition_id"]) == (
        2, 1.5, "acct:invalidates",
    )
    # Weighted but covered by nobody (cand-b04 gives it 0): still a unit, without spans.
    assert units["billing:abstain:refund_reason"]["source_spans"] == []
    assert units["context:customer:timezone"]["unit_weight"] == 1.0  # task.default_unit_weight

    queries = rows_of(billing, "queries.jsonl")
    assert [q["query_id"] for q in queries] == [f"billing-support:objective_unit:{n:04d}" for n in range(len(units))]
    assert [q["required_unit_ids"] for q in queries] == [[u] for u in units]
    pro = next(q for q in queries if q["required_unit_ids"] == ["current:plan:pro"])
    assert (pro["question"], pro["answer"], pro["answer_session_ids"]) == (
        "Which plan is the customer on now?", "The customer is on the Pro plan.", ["sess-b2"],
    )

    matrix = rows_of(billing, "coverage_matrix.jsonl")
    cells = [(c["candidate_id"], c["unit_id"]) for c in matrix]
    assert cells == sorted(cells)
    assert all(c["coverage"] > 0 for c in matrix)  # sparse: cand-b04's zero for the abstention unit is left out
    decisions = rows_of(billing, "annotation_decisions.jsonl")
    assert [(d["candidate_id"], d["unit_id"]) for d in decisions] == [(c["candidate_id"], c["unit_id"]) for c in matrix]
    assert decisions[0]["record_id"] == "billing-support:coverage:000000"

    instance = json.loads((billing / "instance.json").read_text())
    assert (instance["candidate_count"], instance["positive_cell_count"]) == (5, len(matrix))
    assert instance["coverage_cell_count"] == 5 * len(units)
    assert instance["stale_unit_ids"] == ["stale:plan:basic"]


@pytest.mark.parametrize(
    ("value", "label"),
    [(1.0, "full"), (0.99, "partial_strong"), (0.75, "partial_strong"), (0.74, "partial_weak"), (0.5, "partial_weak"),
     (0.49, "hint_only"), (0.01, "hint_only")],
)
def test_coverage_labels(tmp_path: Path, value: float, label: str) -> None:
    write_jsonl(tmp_path / "in.jsonl", [candidate("c1", "inst", "s1", {"u:one": value})])
    export(tmp_path / "out", tmp_path / "in.jsonl", None)

    (cell,) = rows_of(packages(tmp_path / "out")["inst"], "coverage_matrix.jsonl")
    assert (cell["coverage"], cell["coverage_label"]) == (value, label)


def test_zero_cells_only_on_request(tmp_path: Path) -> None:
    rows = [candidate("c1", "inst", "s1", {"u:a": 0.9}), candidate("c2", "inst", "s1", {"u:b": 0.6, "u:c": 0.0})]
    write_jsonl(tmp_path / "in.jsonl", rows)
    export(tmp_path / "sparse", tmp_path / "in.jsonl", None)
    export(tmp_path / "dense", tmp_path / "in.jsonl", None, "task.include_zero_coverage=true")

    sparse = rows_of(packages(tmp_path / "sparse")["inst"], "coverage_matrix.jsonl")
    dense = rows_of(packages(tmp_path / "dense")["inst"], "coverage_matrix.jsonl")
    assert [(c["candidate_id"], c["unit_id"]) for c in sparse] == [("c1", "u:a"), ("c2", "u:b")]
    # Units are the covered ones (u:c is only mentioned with 0); every (candidate, unit) cell is listed.
    assert [(c["candidate_id"], c["unit_id"], c["coverage_label"]) for c in dense] == [
        ("c1", "u:a", "partial_strong"), ("c1", "u:b", "none"), ("c2", "u:a", "none"), ("c2", "u:b", "partial_weak"),
    ]


def test_unit_kinds_and_states(tmp_path: Path) -> None:
    expected = {
        "current:plan": ("current_truth", "current"),
        "user:current:city": ("current_truth", "current"),
        "invalid:plan": ("invalidation", "invalidates_prior"),
        "user:invalidates:city": ("invalidation", "invalidates_prior"),
        "stale:plan": ("stale_or_superseded", "superseded"),
        "context:weather": ("context", "current"),
        "user:context:mood": ("context", "current"),
        "user:abstain:age": ("abstention", "missing_evidence"),
        "user:likes:tea": ("synthetic_evidence", "current"),
        # The instance's lists win over the id conventions.
        "context:listed_as_current": ("current_truth", "current"),
        "x:listed_as_invalidation": ("invalidation", "invalidates_prior"),
        "current:listed_as_stale": ("stale_or_superseded", "superseded"),
    }
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps({"instances": {"inst": {
        "current_unit_ids": ["context:listed_as_current"],
        "invalidation_unit_ids": ["x:listed_as_invalidation"],
        "stale_unit_ids": ["current:listed_as_stale"],
    }}}))
    write_jsonl(tmp_path / "in.jsonl", [candidate("c1", "inst", "s1", dict.fromkeys(expected, 1.0))])
    export(tmp_path / "out", tmp_path / "in.jsonl", instances)

    package = packages(tmp_path / "out")["inst"]
    units = {u["unit_id"]: (u["kind"], u["state"]) for u in rows_of(package, "evidence_units.jsonl")}
    assert units == expected
    categories = {q["required_unit_ids"][0]: q["category"] for q in rows_of(package, "queries.jsonl")}
    assert categories == {unit: kind for unit, (kind, _) in expected.items()}
    instance = json.loads((package / "instance.json").read_text())
    assert instance["stale_unit_ids"] == ["current:listed_as_stale", "stale:plan"]


def test_folder_names_cannot_climb_out_of_coverage(tmp_path: Path) -> None:
    groups = ["../../etc", "..", "a/b", "a_b", "a b", "/abs/path", "ünïcode", "-rf", ""]
    rows = [candidate(f"c{n}", group, "s", {"u:x": 1.0}) for n, group in enumerate(groups)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    export(tmp_path / "out", tmp_path / "in.jsonl", None)

    manifest = json.loads((tmp_path / "out" / "coverage" / "coverage_export_manifest.json").read_text())
    directories = [entry["directory"] for entry in manifest["packages"]]
    assert len(set(directories)) == len(groups)
    assert all(FOLDER.match(name) for name in directories)
    coverage = (tmp_path / "out" / "coverage").resolve()
    for name in directories:
        assert (coverage / name).resolve().parent == coverage
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "coverage", "manifest.json", "quarantine.jsonl", "report.html", "stats.json",
    ]


def test_a_candidate_without_a_session_is_a_synthetic_experience(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", [candidate("c1", "inst", None, {"u:x": 0.8})])
    export(tmp_path / "out", tmp_path / "in.jsonl", None)

    (experience,) = rows_of(packages(tmp_path / "out")["inst"], "experiences.jsonl")
    assert experience["experience_id"] == experience["session_id"] == "inst:synthetic"


def test_the_package_split_is_its_groups_side(tmp_path: Path) -> None:
    rows = [candidate(f"c{n}", f"inst{n}", "s", {"u:x": 1.0}) for n in range(30)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    export(tmp_path / "out", tmp_path / "in.jsonl", None, "split.eval_fraction=0.5")

    manifest = json.loads((tmp_path / "out" / "coverage" / "coverage_export_manifest.json").read_text())
    sides = {entry["split"] for entry in manifest["packages"]}
    assert sides == {"train", "eval"}
    for entry in manifest["packages"]:
        package = tmp_path / "out" / "coverage" / entry["directory"]
        assert {row["split"] for row in rows_of(package, "experiences.jsonl")} == {entry["split"]}
        assert {row["split"] for row in rows_of(package, "queries.jsonl")} == {entry["split"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('{"instances": {"i": {"unit_weights": {"u": -1}}}}', "instances.i.unit_weights.u"),
        ('{"instances": {"i": {"current_unit_ids": ["u"], "stale_unit_ids": ["u"]}}}', "listed as both"),
    ],
)
def test_a_bad_instance_file_is_a_config_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "instances.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        build_settings(compose_config([f"source.path={CANDIDATES}", "task=coverage", f"task.instances={path}"]))
    (problem,) = caught.value.problems
    assert problem.startswith("task.instances:") and message in problem


def test_cli_writes_the_example_packages(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_cli(
        [f"source.path={CANDIDATES}", "task=coverage", f"task.instances={INSTANCES}", f"hydra.run.dir={run_dir}"],
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "coverage" in done.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    jsonschema.validate(manifest, schema("manifest"))
    assert manifest["counts"] == {"input_rows": 8, "exported_records": 7, "quarantined_rows": 1, "examples": 2, "input_lines": 8}
    assert manifest["config"]["group"]["key"] == "task_id"  # the coverage task's natural group

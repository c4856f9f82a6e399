"""Task sft_instruction: per-stem templates from config, context, the SFT firewall, and the lakehouse experiment
that reproduces the instruction lines the lakehouse deployment had before the task became its own kind."""

from __future__ import annotations

import pytest

from distill.config import build_settings
from distill.errors import ConfigError
from distill.record import Record
import json
from pathlib import Path

from distill.tasks.instruction import SftInstructionParams, SftInstructionTask
from helpers import run_cli
from lakehouse_fixture import compose_lakehouse, dataset_lines, quarantine_by_record, run_lakehouse, schema_violations

INSTRUCTION = ["+experiment=lakehouse_instruction"]
# The lines `task=sft task.format=instruction` wrote from the fixture before instruction SFT became its own task.
EXPECTED_LINES = Path(__file__).resolve().parent / "fixtures" / "lakehouse_instruction_expected.json"

# The templates, written out by hand for the fixture's runs (one per stem, both contract variants).
EXPECTED_INSTRUCTIONS = {
    "run-001": "Review the file 'src/app.py' against the PRD + change-proposal context. Produce a forensic audit with "
    "findings, severity, confidence, patches.",
    "run-007": "Run task_class='mode:summarize' for file 'src/api/routes.py'. Produce the mode-runner's expected "
    "output shape.",
    "run-009": "Auto-apply: emit a 6-line surgical patch for 'src/db.py' based on the latest scrum review findings.",
    "run-004": "Audit phase 'ingest' and report findings with severity.",
    "run-011": "Observer-review the latest attempt on 'src/app.py'. Verdict: accept | reject | cycle.",
    "run-013": "Analyze contractor 'Acme Builders' for permit 'P-100'. Recommend with risk markers.",
    "run-014": "Analyze permit 'P-200'. Recommend with risk markers.",
    "run-016": "Run scenario; report per-event outcome with citations.",
    "run-017": "Source 'kb_digests' run; produce the appropriate output for this task type.",
}


def lines_by_run(result):
    return {line["source_run_id"]: line for line in dataset_lines(result, "sft")}


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    return run_lakehouse(tmp_path_factory.mktemp("instruction"), [*INSTRUCTION, "task.include_partial=true"])


def test_every_shipped_template(partial_run):
    lines = lines_by_run(partial_run)
    assert {run: lines[run]["instruction"] for run in EXPECTED_INSTRUCTIONS} == EXPECTED_INSTRUCTIONS


def test_line_shape_and_schema(partial_run):
    line = lines_by_run(partial_run)["run-001"]
    assert line == {
        "id": line["id"],
        "instruction": EXPECTED_INSTRUCTIONS["run-001"],
        "context": "matrix=prd,change_proposals · pathway_fingerprints=3 · model=qwen2.5-coder-7b",
        "response": "Finding 1 (high, 0.9): app.py swallows DB errors.\nPatch: re-raise after logging.",
        "source_run_id": "run-001",
        "quality_score": 1.0,
        "provenance": {
            "record_ids": ["run-001"], "categories": ["accepted"], "run_id": "run-001",
            "source_file": "data/_kb/scrum_reviews.jsonl", "line_offset": 1, "sig_hash": "58283de9327dbd6c",
            "created_at_start": "2026-03-01T11:00:00Z", "created_at_end": "2026-03-01T11:00:00Z",
        },
    }
    assert line["id"].startswith("sft-")
    assert schema_violations("sft_instruction_line", dataset_lines(partial_run, "sft")) == []


def test_context_leaves_out_what_is_absent(partial_run):
    lines = lines_by_run(partial_run)
    assert lines["run-017"]["context"] == "matrix=kb · model=qwen2.5-coder-7b"  # 0 fingerprints are not shown
    assert lines["run-013"]["context"] == "model=llama-3.1-8b"


def test_partial_records_score_lower_and_only_with_include_partial(tmp_path, partial_run):
    assert lines_by_run(partial_run)["run-005"]["quality_score"] == 0.5
    default = run_lakehouse(tmp_path, INSTRUCTION)
    assert "run-005" not in lines_by_run(default)
    assert quarantine_by_record(default)["run-005"]["reason"] == "unsafe_sft_category"


def test_extractors_are_not_instructable(partial_run):
    row = quarantine_by_record(partial_run)["run-006"]
    assert (row["step"], row["reason"]) == ("task", "not_instructable")
    assert "extractor" in row["errors"][0]


def test_users_add_and_replace_templates_from_the_command_line(tmp_path):
    result = run_lakehouse(tmp_path, [
        *INSTRUCTION,
        "++task.templates.kb_digests='Digest {task_id} with {model} ({role})'",
        "task.templates.audits='Audit {phase}.'",
    ])
    lines = lines_by_run(result)
    assert lines["run-017"]["instruction"] == "Digest digest:weekly with qwen2.5-coder-7b (executor)"
    assert lines["run-004"]["instruction"] == "Audit ingest."


def test_instructable_roles_are_config(tmp_path):
    result = run_lakehouse(tmp_path, [*INSTRUCTION, "task.instructable_roles=[executor,extractor]"])
    lines = lines_by_run(result)
    assert "run-006" in lines and "run-001" not in lines
    assert quarantine_by_record(result)["run-001"]["reason"] == "not_instructable"


@pytest.mark.parametrize(
    "override, key",
    [
        ("++task.templates.mine='Do {nope}'", "task.templates"),
        ("++task.templates.mine='Do {}'", "task.templates"),
        ("task.fallback_template='Run {contractor}'", "task.fallback_template"),
        ("++task.template_fields.stem=source", "task.template_fields"),
        ("task.role_from=metdata.model_role", "task.role_from"),
        ("task.stem_from=[provenance.source_file,evidence_file]", "task.stem_from"),
    ],
)
def test_bad_templates_fail_before_the_run(override, key):
    with pytest.raises(ConfigError) as error:
        build_settings(compose_lakehouse([*INSTRUCTION, override]))
    assert [problem.split(":")[0] for problem in error.value.problems] == [key]


def test_stem_and_template_choice():
    def record(**fields):
        return Record(id="r", **fields)

    task = SftInstructionTask(SftInstructionParams(
        kind="sft_instruction",
        stem_from=("metadata.evidence_source_file", "provenance.source_file"),
        stem_prefix="data/_kb/",
        stem_suffix=".jsonl",
        templates={"audits": ["Only with {contractor}", "Phase {phase} of {file}"]},
        template_fields={"contractor": "metadata.contractor", "phase": {"path": "task_id", "strip_prefix": "phase:"}},
        fallback_template="Fallback {stem}",
    ))
    assert task.stem(record(metadata={"evidence_source_file": "data/_kb/audits.jsonl"})) == "audits"
    assert task.stem(record(provenance={"source_file": "logs/other.jsonl"})) == "logs/other"
    assert task.stem(record()) == "unknown"
    audit = record(task_id="phase:x", metadata={"evidence_source_file": "data/_kb/audits.jsonl"})
    assert task.render_instruction(audit) == "Phase x of <file>"
    assert task.render_instruction(record()) == "Fallback unknown"


def test_the_generic_task_knows_no_deployment_vocabulary():
    task = SftInstructionTask(SftInstructionParams(
        kind="sft_instruction", context_fields={"model": "metadata.model", "n": "metadata.n", "tags": "metadata.tags"},
    ))
    plain = Record(id="r", source="billing", role="assistant", text="Refund issued.",
                   metadata={"model": "m1", "n": 0, "tags": ["a", "b"], "evidence_source_file": "data/_kb/audits.jsonl"})
    assert task.stem(plain) == "billing"
    assert task.render_instruction(plain) == "Source 'billing' run; produce the appropriate output for this task type."
    assert task.render_context(plain) == "model=m1 · tags=a,b"


@pytest.mark.parametrize("variant, overrides", [("default", []), ("include_partial", ["task.include_partial=true"])])
def test_the_lakehouse_experiment_reproduces_the_former_instruction_lines(tmp_path, variant, overrides):
    expected = json.loads(EXPECTED_LINES.read_text("utf-8"))[variant]
    assert dataset_lines(run_lakehouse(tmp_path, [*INSTRUCTION, *overrides]), "sft") == expected


def test_the_old_instruction_flag_names_the_new_task(tmp_path):
    done = run_cli(["task=sft", "task.format=instruction"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "distill: error: task.format: instruction SFT is its own task now: use task=sft_instruction"
    ]


def test_a_record_path_reads_an_embedding_the_reduce_read_back_packed():
    """A template field may name `embedding`: read from a record as the reduce reads it back from a part spill (its
    embedding kept as the map packed it), it is the same list the record held."""
    from distill.record import Origin, packed_records, unpacked_records
    from distill.sources.fast_lane import fast_record
    from distill.tasks.instruction import record_value

    line = b'{"id": "a", "text": "x", "embedding": [0.25, -1]}'
    [back] = unpacked_records(packed_records([fast_record(line, Origin(path="logs.jsonl", line=1))]))
    assert back.embedding is None and back.packed_embedding is not None
    assert record_value(back, "embedding") == record_value(Record.model_validate_json(line), "embedding") == [0.25, -1.0]

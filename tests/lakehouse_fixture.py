"""The committed lakehouse fixture (written by tests/fixtures/make_lakehouse.py) and what it holds, by hand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from distill.config import build_settings
from distill.runner import RunResult, run
from helpers import compose_config, read_jsonl, run_pipeline
from distill.validation import load_schema

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lakehouse"
REPO_ROOT = FIXTURE / "repo"
SCORED = "data/scored-runs/2026/03/{day}/runs.jsonl"

# Run ids by category, as make_lakehouse.py writes them (rows the source quarantines are not listed).
ACCEPTED = {"run-001", "run-004", "run-006", "run-007", "run-009", "run-011", "run-013", "run-014", "run-017",
            "run-018", "run-021"}
PARTIAL = {"run-005", "run-016"}
REJECTED = {"run-002", "run-003", "run-008", "run-015", "run-019"}
REVIEW = {"run-010", "run-012"}
NEVER_SFT = REJECTED | REVIEW
INPUT_ROWS = 28  # 20 joined runs, 1 with an invalid category, 6 rows the source quarantines, 1 orphan partition


def lakehouse_overrides(overrides: Sequence[str] = ()) -> list[str]:
    return ["source=lakehouse", f"source.root={FIXTURE}", "split=none", *overrides]


def run_lakehouse(output_dir: Path, overrides: Sequence[str] = ()) -> RunResult:
    return run_pipeline(output_dir, lakehouse_overrides(overrides))


def run_with_task_values(output_dir: Path, config: dict[str, Any], **task_values: Any) -> RunResult:
    """Runs a composed config with some `task.*` values set, as `task.NAME=VALUE` overrides would set them
    (composing once and varying plain values keeps combination tests fast)."""
    varied = {**config, "task": {**config["task"], **task_values}}
    return run(build_settings(varied), output_dir, config=varied)


def compose_lakehouse(overrides: Sequence[str] = ()) -> dict[str, Any]:
    return compose_config(lakehouse_overrides(overrides))


def dataset_lines(result: RunResult, name: str) -> list[dict[str, Any]]:
    """Every line of the run's dataset files for task output `name` (split or not)."""
    return [row for path in sorted(result.output_dir.glob(f"{name}*.jsonl")) for row in read_jsonl(path)]


def quarantine_by_record(result: RunResult) -> dict[str, dict[str, Any]]:
    return {row["record_id"]: row for row in read_jsonl(result.output_dir / "quarantine.jsonl")}


def schema_violations(schema: str, lines: list[dict[str, Any]]) -> list[str]:
    """Messages of the `jsonschema` library (not the writer's validator) for lines that fail `schema`."""
    validator = Draft202012Validator(load_schema(schema))
    return [f"{line.get('id')}: {error.message}" for line in lines for error in validator.iter_errors(line)]

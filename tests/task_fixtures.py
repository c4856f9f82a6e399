"""Small fixtures for export-task tests: input rows, a run on them, and checks of what was written."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from helpers import REPO, read_jsonl, run_pipeline, write_jsonl

from distill.runner import RunResult


def turn(record_id: str, role: str | None, text: str, at: int | None = None, **fields: Any) -> dict[str, Any]:
    """One input row; `at` is seconds after a fixed start (omitted: undated)."""
    row: dict[str, Any] = {"id": record_id, "session_id": "s1", "role": role, "text": text, **fields}
    if at is not None:
        row["created_at"] = f"2026-01-01T00:00:{at:02d}Z"
    return {k: v for k, v in row.items() if v is not None}


@dataclass
class Run:
    result: RunResult
    lines: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    output: Path

    def reasons(self) -> dict[str, str]:
        """record_id -> quarantine reason."""
        return {row["record_id"]: row["reason"] for row in self.quarantine}

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads((self.result.output_dir / "stats.json").read_text("utf-8"))


def run_task(tmp_path: Path, rows: Sequence[dict[str, Any]], *overrides: str) -> Run:
    """Runs the real pipeline on `rows` (no split) and reads back the single dataset file and the quarantine."""
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    result = run_pipeline(out, [f"source.path={source}", "split=none", *overrides])
    dataset = out / result.files[0]
    return Run(result, read_jsonl(dataset), read_jsonl(out / "quarantine.jsonl"), dataset)


def assert_schema_valid(lines: Sequence[dict[str, Any]], schema_name: str) -> None:
    schema = json.loads((REPO / "schemas" / f"{schema_name}.schema.json").read_text("utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    for line in lines:
        validator.validate(line)


def load_with_datasets(path: Path, cache: Path) -> list[dict[str, Any]]:
    """The file as HuggingFace `datasets` loads it (Arrow needs one type per field across rows)."""
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache)).to_list()

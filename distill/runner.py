"""The runner: source -> parse -> curation chain -> group -> split -> task -> files, with the ledger closed."""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.config import Settings
from distill.executor import StageReport, run_chain
from distill.grouping import group_records
from distill.hashing import canonical_json, sha256_hex
from distill.quarantine import Drop, Ledger, QuarantineRow
from distill.reasons import Reason
from distill.record import Record, format_timestamp
from distill.split import ALL, assign_sides
from distill.stats import file_stats
from distill.steps.scrub_secrets import quarantine_redactor
from distill.tasks.base import Example
from distill.validation import schema_errors
from distill.writer import write_json, write_jsonl

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PARSE_STEP = "parse"
WRITE_STEP = "write"
PROGRESS_EVERY = 10_000


@dataclass
class RunResult:
    output_dir: Path
    manifest: dict[str, Any]
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = self.manifest["counts"]
        sides = self.manifest["split"]["examples"]
        per_side = ", ".join(f"{side} {n}" for side, n in sides.items())
        lines = [
            f"distill: {counts['input_rows']} rows in -> {counts['examples']} examples ({per_side}); "
            f"{counts['exported_records']} records exported, {counts['quarantined_rows']} quarantined"
        ]
        for stage in self.manifest["stages"]:
            dropped = " ".join(f"{reason}={n}" for reason, n in stage["dropped"].items()) or "-"
            lines.append(f"  {stage['step']:<16} kept {stage['kept']:>8}  dropped {dropped}")
        lines.append(f"wrote {self.output_dir} ({', '.join(self.files)})")
        return "\n".join(lines)


def read_records(settings: Settings, ledger: Ledger) -> tuple[list[Record], StageReport]:
    """Every input row becomes a Record or a parse-stage quarantine row; a repeated id is a `duplicate`."""
    report = StageReport(PARSE_STEP, settings.source.kind)
    records: list[Record] = []
    first_seen: dict[str, Record] = {}
    started = time.perf_counter()
    for parsed in settings.source.read():
        ledger.input_rows += 1
        if ledger.input_rows % PROGRESS_EVERY == 0:
            rate = ledger.input_rows / max(time.perf_counter() - started, 1e-9)
            log.info("read %d rows (%.0f rows/s)", ledger.input_rows, rate)
        if isinstance(parsed, QuarantineRow):
            ledger.quarantine(parsed)
            report.dropped[parsed.reason.value] += 1
            continue
        earlier = first_seen.setdefault(parsed.id, parsed)
        if earlier is not parsed:
            where = earlier.origin.label() if earlier.origin else "an earlier row"
            ledger.drop(PARSE_STEP, parsed, Drop(Reason.duplicate, (f"id {parsed.id!r} already read at {where}",)))
            report.dropped[Reason.duplicate.value] += 1
            continue
        records.append(parsed)
    report.kept = len(records)
    records.sort(key=Record.order_key)
    return records, report


def _validated(examples: Sequence[Example], schema: str, ledger_rows: list[tuple[Example, list[str]]]) -> list[Example]:
    valid = []
    for example in examples:
        errors = schema_errors(schema, example.line)
        if errors:
            ledger_rows.append((example, errors))
        else:
            valid.append(example)
    return valid


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("distill", "hydra-core", "omegaconf", "pydantic", "numpy", "orjson", "fastjsonschema"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def output_file_name(task_name: str, side: str) -> str:
    return f"{task_name}.jsonl" if side == ALL else f"{task_name}.{side}.jsonl"


def run(
    settings: Settings,
    output_dir: Path,
    *,
    config: dict[str, Any],
    choices: dict[str, Any] | None = None,
    command: str = "",
) -> RunResult:
    output_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger()
    records, parse_report = read_records(settings, ledger)
    kept, dropped, stage_reports = run_chain(settings.steps, records, ledger, settings.batch_size)
    groups = group_records(kept, dropped, settings.group_key)
    sides = assign_sides(groups, settings.split, settings.split_key)

    task = settings.task
    task_drops: dict[str, Counter[str]] = {}
    examples_by_side: dict[str, list[Example]] = {}
    invalid: list[tuple[Example, list[str]]] = []
    task_counts: Counter[str] = Counter()
    for side, side_groups in sides.items():
        output = task.build(side_groups)
        task_counts.update(output.counts)
        for step, record, drop in output.drops:
            ledger.drop(step, record, drop)
            task_drops.setdefault(step, Counter())[drop.reason.value] += 1
        examples = _validated(output.examples, task.schema, invalid)
        examples_by_side[side] = sorted(examples, key=Example.sort_key)

    exported_ids = {r.id for examples in examples_by_side.values() for e in examples for r in e.records}
    write_drops: Counter[str] = Counter()
    written_off: set[str] = set()
    for example, errors in invalid:
        for record in example.records:
            # A record of a rejected line still counts as exported when another, valid line uses it.
            if record.id not in exported_ids and record.id not in written_off:
                written_off.add(record.id)
                ledger.drop(WRITE_STEP, record, Drop(Reason.schema_violation, tuple(errors), {"example_id": example.id}))
                write_drops[Reason.schema_violation.value] += 1

    counts = ledger.close(exported_ids)
    counts["examples"] = sum(len(examples) for examples in examples_by_side.values())

    stages = [parse_report.to_json(), *(report.to_json() for report in stage_reports)]
    remaining = len(kept)
    for step, reasons in [*task_drops.items(), (WRITE_STEP, write_drops)]:
        remaining -= sum(reasons.values())
        stages.append({"step": step, "kind": f"task:{task.kind}", "kept": remaining, "dropped": dict(sorted(reasons.items()))})

    excluded = {stage["step"]: stage["dropped"] for stage in stages if stage["dropped"]}
    files: list[str] = []
    outputs: list[dict[str, Any]] = []
    stats: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "task": task.kind, "files": {}}
    for side, examples in examples_by_side.items():
        name = output_file_name(task.output_name, side)
        stats["files"][name] = file_stats(task.kind, examples, excluded)
        if not settings.dry_run:
            outputs.append(write_jsonl(output_dir / name, (e.line for e in examples)))
            files.append(name)
    quarantine_rows = ledger.sorted_rows()
    redact = quarantine_redactor(settings.steps)  # identity unless scrub_secrets is in the chain
    outputs.append(write_jsonl(output_dir / "quarantine.jsonl", (redact(row.to_json()) for row in quarantine_rows)))
    files.append("quarantine.jsonl")
    if not settings.dry_run:
        outputs.append({**write_json(output_dir / "stats.json", stats), "rows": None})
        files.append("stats.json")

    exported_records = [r for examples in examples_by_side.values() for e in examples for r in e.records]
    dated = [r.created_at for r in exported_records if r.created_at is not None]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "config": config,
        "config_sha256": sha256_hex(canonical_json(config)),
        "choices": {**(choices or {}), "curation.order": settings.step_order},
        "inputs": settings.source.inputs(),
        "outputs": [{k: v for k, v in entry.items() if v is not None} for entry in outputs],
        "counts": counts,
        "task_counts": dict(sorted(task_counts.items())),
        "quarantine": dict(sorted(Counter(row.reason.value for row in quarantine_rows).items())),
        "stages": stages,
        "split": {
            **settings.split.model_dump(),
            "by": settings.split.by or settings.group_kind,
            "groups": {side: len(side_groups) for side, side_groups in sides.items()},
            "examples": {side: len(examples) for side, examples in examples_by_side.items()},
        },
        "created_at_range": {"start": format_timestamp(min(dated)), "end": format_timestamp(max(dated))}
        if dated
        else None,
        "dry_run": settings.dry_run,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "created_at": format_timestamp(datetime.now(timezone.utc).replace(microsecond=0)),
    }
    write_json(output_dir / "manifest.json", manifest)
    files.append("manifest.json")
    return RunResult(output_dir, manifest, files)

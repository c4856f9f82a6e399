"""`manifest.json`: what ran (command, resolved config, choices, versions), on what (inputs with hashes), what came
out (outputs with hashes, counts, stages, split) and when. The only output file allowed to hold wall-clock time."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.hashing import canonical_json, sha256_hex
from distill.record import format_timestamp

SCHEMA_VERSION = 1
VERSIONED_PACKAGES = (
    "distill", "hydra-core", "omegaconf", "pydantic", "numpy", "orjson", "fastjsonschema", "jinja2", "tokenizers",
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def build_manifest(
    *,
    command: str,
    config: dict[str, Any],
    choices: dict[str, Any],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    counts: dict[str, int],
    task_counts: dict[str, int],
    quarantine: dict[str, int],
    stages: list[dict[str, Any]],
    split: dict[str, Any],
    created_at_range: dict[str, str] | None,
    dry_run: bool,
    notes: Sequence[str] = (),
    executor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest in its contract's key order; `outputs` is the caller's list, so documents rendered from this
    manifest (report, dataset card) can still add their own entries before it is written."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "config": config,
        "config_sha256": sha256_hex(canonical_json(config)),
        "choices": choices,
        "inputs": inputs,
        "outputs": outputs,
        "counts": counts,
        "task_counts": task_counts,
        "quarantine": quarantine,
        "stages": stages,
        "split": split,
        "created_at_range": created_at_range,
        "dry_run": dry_run,
        "notes": list(notes),
        "versions": versions(),
        "executor": executor or {"kind": "local"},
        "git_commit": git_commit(),
        "created_at": format_timestamp(datetime.now(timezone.utc).replace(microsecond=0)),
    }

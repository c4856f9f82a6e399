"""What the documents for people (the run report, the dataset card) share: the funnel of stages, the command that
reproduces a run, number formatting, and their jinja2 templates (`distill/output/templates/`)."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Overrides that choose where a run writes, not what it writes: a rerun may pick another directory.
PLACEMENT_OVERRIDES = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir=")


def format_count(n: int | float | None) -> str:
    """1234567 -> '1,234,567'; a fraction keeps up to 4 significant decimals; None -> '-'."""
    if n is None:
        return "-"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.4g}" if abs(n) < 1000 else f"{n:,.1f}"
    return f"{int(n):,}"


def funnel_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage of `manifest.stages`, in order: step, kind, rows in, kept, dropped (total), and the
    dropped rows by reason as `reason=n` text."""
    rows = []
    before = manifest["counts"]["input_rows"]
    for stage in manifest["stages"]:
        dropped = sum(stage["dropped"].values())
        rows.append({
            "step": stage["step"],
            "kind": stage["kind"],
            "rows_in": before,
            "kept": stage["kept"],
            "dropped": dropped,
            "reasons": ", ".join(f"{reason}={format_count(n)}" for reason, n in stage["dropped"].items()),
        })
        before = stage["kept"]
    return rows


def reproduce_command(manifest: dict[str, Any]) -> str:
    """The command line that reproduces the run's files: the one that made it without the overrides that only
    choose the output directory; for a run started from Python, `distill` with the group choices it composed."""
    command = manifest.get("command") or ""
    if command:
        words = [w for w in shlex.split(command) if not w.startswith(PLACEMENT_OVERRIDES)]
        return shlex.join(words)
    choices = manifest.get("choices", {})
    groups = ("source", "curation", "group", "split", "task")
    return shlex.join(["distill", *(f"{group}={choices[group]}" for group in groups if group in choices)])


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["count"] = format_count
    return environment


def template(name: str) -> jinja2.Template:
    """A document template from `distill/output/templates/`, with the `count` filter (format_count)."""
    return _environment().get_template(name)

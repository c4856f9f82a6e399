"""What every document for people shares (report.html, sweep_report.html, the dataset card): the template loader,
number formatting, the funnel read from the manifest's stages, the reproducing command, and the helpers that keep
log text inert.

Log text is untrusted. HTML templates are autoescaped, and nothing here marks record data as safe: a record holding
`<script>` shows as text. Markdown templates (the card) are not autoescaped; they pass record text through
`md_text`.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

__all__ = [
    "Markup", "escape", "FunnelRow", "funnel_rows", "emptied_by", "reproduce_command", "fmt_int", "fmt_number",
    "fmt_share", "short_hash", "clip", "pretty_json", "md_text", "top_counts", "environment", "render",
    "write_document",
]

# Bounds that keep a document's size independent of the input: record text and JSON shown per sample, values of
# one mix table.
TEXT_CHARS = 2_000
JSON_CHARS = 4_000
MIX_ROWS = 12


# -- numbers ---------------------------------------------------------------------------------------------------


def fmt_int(value: int | float | None) -> str:
    """1234567 -> '1,234,567'; None -> '–'."""
    if value is None:
        return "–"
    return f"{int(value):,}"


def fmt_number(value: int | float | None, digits: int = 4) -> str:
    """Integers with thousands separators, other numbers with `digits` significant digits; None -> '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if float(value).is_integer() and abs(value) < 1e15:
        return fmt_int(value)
    return f"{value:.{digits}g}"


def fmt_share(part: int | float, whole: int | float) -> str:
    """part / whole as a percentage with one decimal ('12.5%'); '–' when whole is 0."""
    return f"{100 * part / whole:.1f}%" if whole else "–"


def short_hash(sha256: str | None, length: int = 12) -> str:
    return (sha256 or "")[:length]


# -- text ------------------------------------------------------------------------------------------------------


def clip(text: Any, limit: int = TEXT_CHARS) -> str:
    """The text cut at `limit` characters, saying how much was left out (documents stay bounded)."""
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


def pretty_json(value: Any, limit: int = JSON_CHARS) -> str:
    """Indented JSON with sorted keys, clipped; plain text (the template escapes it)."""
    if isinstance(value, str):
        return clip(value, limit)
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    return clip(text, limit)


def md_text(value: Any, limit: int = TEXT_CHARS) -> str:
    """Record text for Markdown: clipped, HTML-escaped (Markdown renders inline HTML) and with the characters that
    would start Markdown syntax escaped, on one line."""
    text = str(escape(clip(value, limit)))
    text = " ".join(text.split())
    for char in "\\`*_[]#|":
        text = text.replace(char, "\\" + char)
    return text


def top_counts(counts: Mapping[str, int], limit: int = MIX_ROWS) -> list[tuple[str, int]]:
    """The `limit` largest counts (ties by name); the rest summed as one row '… N others'."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) <= limit:
        return ranked
    rest = ranked[limit - 1 :]
    return ranked[: limit - 1] + [(f"… {len(rest):,} others", sum(n for _, n in rest))]


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class FunnelRow:
    """One stage of the funnel: rows entering it, kept, dropped by reason (largest first)."""

    step: str
    kind: str
    entered: int
    kept: int
    dropped: list[tuple[str, int]] = field(default_factory=list)

    @property
    def dropped_total(self) -> int:
        return sum(n for _, n in self.dropped)


def funnel_rows(manifest: Mapping[str, Any]) -> list[FunnelRow]:
    """The manifest's stages as a funnel. The first stage (parse) enters with the input rows; each later stage with
    what the one before kept."""
    rows: list[FunnelRow] = []
    entered = manifest["counts"]["input_rows"]
    for stage in manifest["stages"]:
        dropped = sorted(stage["dropped"].items(), key=lambda item: (-item[1], item[0]))
        rows.append(FunnelRow(stage["step"], stage.get("kind", ""), entered, stage["kept"], dropped))
        entered = stage["kept"]
    return rows


def emptied_by(manifest: Mapping[str, Any]) -> str | None:
    """For a run with 0 examples, a sentence naming the stage that left nothing; None when there are examples."""
    if manifest["counts"]["examples"]:
        return None
    if manifest["counts"]["input_rows"] == 0:
        return "The source had no rows."
    for row in funnel_rows(manifest):
        if row.kept == 0 and row.entered > 0:
            reasons = ", ".join(f"{reason} {n:,}" for reason, n in row.dropped) or "no reason recorded"
            return f"Stage {row.step} dropped all {row.entered:,} remaining rows ({reasons})."
        if row.entered == 0:
            break
    return "No stage dropped every row, but the task built no example from the records that remained."


def reproduce_command(manifest: Mapping[str, Any]) -> str:
    """The command that reruns this run: the recorded command, pinned to the run's source commit when known."""
    command = manifest.get("command") or "distill"
    commit = manifest.get("git_commit")
    return f"git checkout {commit} && {command}" if commit else command


def config_choices(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(group, option) pairs from the manifest's choices, the step order joined."""
    out = []
    for group, option in manifest.get("choices", {}).items():
        if isinstance(option, list):
            option = ", ".join(map(str, option)) or "(none)"
        out.append((group, "null" if option is None else str(option)))
    return out


def shell_join(parts: Iterable[str]) -> str:
    return shlex.join(list(parts))


# -- templates -------------------------------------------------------------------------------------------------


def _autoescape(name: str | None) -> bool:
    # On for everything but Markdown, so a new template is safe by default.
    return not (name or "").endswith(".md.j2")


def environment() -> Environment:
    """The template environment: templates from distill/output/templates, autoescaped (but `.md.j2`), undefined
    names are errors, and this module's helpers as filters."""
    env = Environment(
        loader=PackageLoader("distill.output", "templates"),
        autoescape=_autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        int=fmt_int, number=fmt_number, short_hash=short_hash, clip=clip, pretty_json=pretty_json, md=md_text
    )
    env.globals.update(share=fmt_share, top_counts=top_counts)
    return env


_ENVIRONMENT: Environment | None = None


def render(template: str, **context: Any) -> str:
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        _ENVIRONMENT = environment()
    return _ENVIRONMENT.get_template(template).render(**context)


def write_document(path: Path, text: str) -> dict[str, Any]:
    """Writes a rendered document atomically; returns its manifest output entry {path, sha256}."""
    data = text.encode("utf-8")
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return {"path": path.name, "sha256": hashlib.sha256(data).hexdigest()}

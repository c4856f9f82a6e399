"""`report.html`: one self-contained page per run (styles and figures inline, no script, nothing fetched) that shows
where the rows went and what the kept and dropped examples look like. Rendered from the `RunDigest` only, so its
cost and size do not grow with the dataset: samples are the digest's first few, texts are clipped, long mixes
are cut to their largest values."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distill.output.documents import DOCUMENTS, RunDigest
from distill.output.figures import histogram_chart
from distill.output.render import (
    config_choices,
    emptied_by,
    funnel_rows,
    render,
    reproduce_command,
    top_counts,
    write_document,
)

REPORT_FILE = "report.html"
MESSAGES_SHOWN = 40
CANDIDATES_SHOWN = 8
EVAL_SETS_SHOWN = 50
FILES_SHOWN = 50
ERRORS_SHOWN = 5
MIXES = (("by_category", "category"), ("by_role", "role"), ("by_source", "source"), ("by_tenant", "tenant"))
HISTOGRAMS = (
    ("tokens_per_example", "tokens per example"),
    ("turns_per_example", "records (turns) per example"),
    ("rewards", "rewards"),
)
# Keys of an example line shown as the example's meta data rather than as content.
SCORE_KEYS = ("rank", "reward", "reward_source")
META_KEYS = ("id", "provenance", "group_id", "reward", "reward_source", "label", "rank", "source_run_id")


def write_report(digest: RunDigest, output_dir: Path) -> dict[str, Any] | None:
    """The report document: writes report.html unless the run's config says `report: false`."""
    if digest.manifest.get("config", {}).get("report") is False:
        return None
    return write_document(output_dir / REPORT_FILE, render_report(digest))


DOCUMENTS.append(write_report)


def render_report(digest: RunDigest) -> str:
    return render("report.html.j2", **report_context(digest))


def report_context(digest: RunDigest) -> dict[str, Any]:
    manifest = digest.manifest
    stats_files = (digest.stats or {}).get("files", {})
    sample_rows = {
        row.get("record_id"): row for rows in digest.quarantine_samples.values() for row in rows if row.get("record_id")
    }
    sample_rows.update(digest.named_samples)
    return {
        "manifest": manifest,
        "inputs": manifest["inputs"][:FILES_SHOWN],
        "outputs": manifest["outputs"][:FILES_SHOWN],
        "more_inputs": max(0, len(manifest["inputs"]) - FILES_SHOWN),
        "more_outputs": max(0, len(manifest["outputs"]) - FILES_SHOWN),
        "errors_shown": ERRORS_SHOWN,
        "counts": manifest["counts"],
        "funnel": funnel_rows(manifest),
        "emptied": emptied_by(manifest),
        "reproduce": reproduce_command(manifest),
        "choices": config_choices(manifest),
        "files": [
            _file_view(name, section, digest.example_samples.get(name, [])) for name, section in stats_files.items()
        ],
        "mix_titles": MIXES,
        "quarantine": _quarantine_view(manifest, digest.quarantine_samples),
        "near_dedup": [_near_dedup_view(stage, sample_rows) for stage in _stages_of(manifest, "near_dedup")],
        "decontamination": [_decontam_view(stage, sample_rows) for stage in _stages_of(manifest, "decontaminate")],
    }


def _file_view(name: str, section: Mapping[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    histograms = section.get("histograms", {})
    return {
        "name": name,
        "stats": section,
        "charts": [histogram_chart(f"{name}: {title}", histograms.get(key)) for key, title in HISTOGRAMS],
        "mixes": {key: top_counts(section.get(key, {})) for key, _ in MIXES},
        "examples": [example_view(line) for line in samples],
    }


def _quarantine_view(manifest: Mapping[str, Any], samples: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per reason (largest first): its count, the stages that dropped for it and the first rows."""
    steps: dict[str, list[str]] = {}
    for stage in manifest["stages"]:
        for reason in stage["dropped"]:
            steps.setdefault(reason, []).append(stage["step"])
    counts = manifest.get("quarantine", {})
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [
        {"reason": reason, "count": n, "steps": steps.get(reason, []), "rows": samples.get(reason, [])}
        for reason, n in ordered
    ]


def _stages_of(manifest: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    return [stage for stage in manifest["stages"] if stage.get("kind") == kind]


def _sampled_text(sample_rows: Mapping[str, dict[str, Any]], record_id: str | None) -> str | None:
    """The text of a record's quarantine row, when the digest holds it."""
    row = sample_rows.get(record_id) if record_id else None
    record = row.get("record") if row else None
    return record.get("text") if isinstance(record, dict) else None


def _near_dedup_view(stage: Mapping[str, Any], sample_rows: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    clusters = [
        {**cluster, "duplicate_text": _sampled_text(sample_rows, cluster.get("duplicate_record"))}
        for cluster in stage.get("largest_clusters", [])
    ]
    figures = {k: v for k, v in stage.items() if k not in ("step", "kind", "kept", "dropped", "largest_clusters")}
    return {"step": stage["step"], "figures": figures, "clusters": clusters}


def _decontam_view(stage: Mapping[str, Any], sample_rows: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    items = stage.get("eval_items", {})
    hits = stage.get("hits", {})
    first = {
        name: {**hit, "text": _sampled_text(sample_rows, hit.get("record_id"))}
        for name, hit in stage.get("first_hits", {}).items()
    }
    sets = sorted(set(items) | set(hits), key=lambda name: (-hits.get(name, 0), name))
    rows = [
        {"eval_set": name, "items": items.get(name), "hits": hits.get(name, 0), "first": first.get(name)}
        for name in sets
    ]
    figures = {
        k: v for k, v in stage.items()
        if k not in ("step", "kind", "kept", "dropped", "hits", "eval_items", "first_hits")
    }
    shown = rows[:EVAL_SETS_SHOWN]
    return {"step": stage["step"], "figures": figures, "rows": shown, "more": len(rows) - len(shown)}


# -- examples as transcripts --------------------------------------------------------------------------------------


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def _is_candidates(value: Any) -> bool:
    """A list of candidates or responses, each with its own messages."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and _is_messages(v.get("messages")) for v in value)


def example_view(line: Mapping[str, Any]) -> dict[str, Any]:
    """An exported line as parts a person reads: (label, transcript | text | JSON) in the line's key order, with
    its id, provenance and scores apart. Works for every task's shape: chat messages, prompt/chosen/rejected,
    candidates or responses (each with its messages), and plain text fields. At most MESSAGES_SHOWN messages in all
    and CANDIDATES_SHOWN candidates per list, so one huge line cannot blow up the page."""
    parts: list[dict[str, Any]] = []
    budget = MESSAGES_SHOWN

    def transcript(label: str, messages: list[dict[str, Any]]) -> None:
        nonlocal budget
        shown = messages[:budget]
        budget -= len(shown)
        parts.append({"label": label, "transcript": {"messages": shown, "more": len(messages) - len(shown)}})

    for key, value in line.items():
        if key in META_KEYS:
            continue
        if _is_messages(value):
            transcript(key, value)
        elif _is_candidates(value):
            for i, candidate in enumerate(value[:CANDIDATES_SHOWN], 1):
                scores = ", ".join(f"{k} {candidate[k]}" for k in SCORE_KEYS if candidate.get(k) is not None)
                transcript(f"{key} #{i}" + (f" ({scores})" if scores else ""), candidate["messages"])
            if len(value) > CANDIDATES_SHOWN:
                parts.append({"label": f"{key}: {len(value) - CANDIDATES_SHOWN:,} more not shown", "text": ""})
        elif isinstance(value, str):
            parts.append({"label": key, "text": value})
        elif value is not None:
            parts.append({"label": key, "json": value})
    meta = {key: line[key] for key in META_KEYS if key in line and line[key] is not None}
    return {"id": line.get("id"), "meta": meta, "parts": parts}

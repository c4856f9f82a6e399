"""Merge, in the driver, deterministically: the dataset files (by the writer), the quarantine in its file order,
stats.json from the partitions' exact parts, the manifest's stages, and the ledger closed by counting: every input
row is an exported record or one quarantine row, checked without holding every id or row in one process."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distill.config import Settings
from distill.output.documents import SAMPLES_PER_REASON, named_records
from distill.output.files import write_json
from distill.output.merged_jsonl import merge_into_jsonl
from distill.output.manifest import SCHEMA_VERSION
from distill.output.stats import StatsPart, file_stats
from distill.output.writers import DatasetWriter, Written
from distill.executor.local import beside, worth_a_process
from distill.plan.context import Layout, PlanContext
from distill.plan.map import PARSE_STEP, MapResult
from distill.plan.reduce import WRITE_STEP, ReduceResult
from distill.quarantine import AccountingError
from distill.reasons import Reason
from distill.record import format_timestamp
from distill.split import ALL, EVAL, TRAIN
from distill.tasks.base import FIREWALL_STEP, TASK_STEP


@dataclass
class Merged:
    outputs: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    task_counts: dict[str, int] = field(default_factory=dict)
    quarantine: dict[str, int] = field(default_factory=dict)
    quarantine_samples: dict[str, list[Any]] = field(default_factory=dict)
    named_samples: dict[str, Any] = field(default_factory=dict)
    example_samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    split: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    created_at_range: dict[str, str] | None = None


def sides_of(settings: Settings) -> list[str]:
    return [ALL] if settings.split.kind == "none" else [TRAIN, EVAL]


def merged_inputs(map_results: Sequence[MapResult]) -> list[dict[str, Any]]:
    """One entry per input, in read order: the rows of a file cut into several shards add up."""
    entries: dict[str, dict[str, Any]] = {}
    for result in map_results:
        for entry in result.inputs:
            key = entry.get("path") or entry.get("uri")
            if key in entries and "rows" in entry:
                entries[key]["rows"] += entry["rows"]
            else:
                entries[key] = dict(entry)
    return list(entries.values())


def stage_entries(
    settings: Settings, map_results: Sequence[MapResult], reduce_results: Sequence[ReduceResult]
) -> list[dict[str, Any]]:
    """The manifest's `stages`: parse, each curation step, then the task's own stages in a fixed order."""
    records = sum(r.records for r in map_results)
    parse_dropped: Counter[str] = Counter()
    for result in map_results:
        parse_dropped.update(result.parse_dropped)
    repeated = sum(r.repeated_ids for r in reduce_results)
    if repeated:
        parse_dropped[Reason.duplicate.value] += repeated
    kept = records - repeated
    stages = [{"step": PARSE_STEP, "kind": settings.source.kind, "kept": kept, "dropped": dict(sorted(parse_dropped.items()))}]
    for position, step in enumerate(settings.steps):
        dropped: Counter[str] = Counter()
        for result in reduce_results:
            dropped.update(result.chain_drops.get(position, {}))
        step.counters = Counter()
        for result in map_results:
            step.counters.update(result.counters.get(step.name, {}))
        kept -= sum(dropped.values())
        stages.append({
            "step": step.name, "kind": step.kind, "kept": kept, "dropped": dict(sorted(dropped.items())),
            **step.manifest_extra(),
        })
    task_drops: dict[str, Counter[str]] = {}
    for result in reduce_results:
        for name, reasons in result.task_drops.items():
            task_drops.setdefault(name, Counter()).update(reasons)
    task_steps = [FIREWALL_STEP, TASK_STEP]
    task_steps += sorted(set(task_drops) - {FIREWALL_STEP, TASK_STEP, WRITE_STEP}) + [WRITE_STEP]
    for name in task_steps:
        reasons = task_drops.get(name, Counter())
        kept -= sum(reasons.values())
        stages.append({
            "step": name, "kind": f"task:{settings.task.kind}", "kept": kept, "dropped": dict(sorted(reasons.items()))
        })
    return stages


@dataclass
class QuarantineFile:
    """quarantine.jsonl as `merge_quarantine` wrote it: its manifest entry, rows per reason and the samples the
    documents show."""

    entry: dict[str, Any]
    reasons: dict[str, int]
    samples: dict[str, list[Any]]
    named_samples: dict[str, Any]


@dataclass
class QuarantineRows:
    """quarantine.jsonl's rows as they are merged: rows per reason, the first rows of each reason and the rows of the
    records a document shows by id (`named`), for the documents."""

    named: set[str]
    reasons: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[Any]] = field(default_factory=dict)
    named_samples: dict[str, Any] = field(default_factory=dict)

    def line(self, entry: tuple[Any, tuple[str, str | None], memoryview]) -> memoryview:
        _, (reason, record_id), line = entry
        self.reasons[reason] += 1
        taken = self.samples.setdefault(reason, [])
        if len(taken) < SAMPLES_PER_REASON:
            taken.append(orjson.loads(line))
        if record_id in self.named and record_id not in self.named_samples:
            self.named_samples[record_id] = orjson.loads(line)
        return line


def merge_quarantine(
    layout: Layout, shards: Sequence[int], partitions: int, named: set[str], output_dir: Path
) -> QuarantineFile:
    """quarantine.jsonl: the map and reduce spills (each sorted) merged in (origin, record id) order. `named`: the
    record ids a document shows by id (a near-duplicate cluster's, an eval set's first hit)."""
    spills = [layout.map_quarantine(shard) for shard in shards]
    spills += [layout.reduce_quarantine(partition) for partition in range(partitions)]
    entry, rows = merge_into_jsonl(output_dir / "quarantine.jsonl", spills, layout.merging, QuarantineRows(named))
    return QuarantineFile(entry, dict(sorted(rows.reasons.items())), dict(sorted(rows.samples.items())), rows.named_samples)


def merge(
    ctx: PlanContext,
    writer: DatasetWriter,
    shards: Sequence[int],
    map_results: Sequence[MapResult],
    reduce_results: Sequence[ReduceResult],
    output_dir: Path,
) -> Merged:
    settings = ctx.settings
    merged = Merged()
    sides = sides_of(settings)
    written = Written()
    merged.stages = stage_entries(settings, map_results, reduce_results)
    # The quarantine and the dataset files are merged at once, on two cores when the run has them and is large
    # enough for it to matter (at 1e6 records, 9.2 -> 7.2 s).
    quarantine_args = (ctx.layout, list(shards), ctx.partitions, named_records(merged.stages), output_dir)
    apart = settings.executor.workers > 1 and worth_a_process(sum(r.rows for r in map_results))
    with beside(merge_quarantine, quarantine_args, process=apart) as quarantine_merged:
        if not settings.dry_run:
            written = writer.finish(sides, [r.written for r in reduce_results])
        quarantine: QuarantineFile = quarantine_merged()
    merged.outputs.extend(written.entries)
    merged.files.extend(written.files)
    merged.example_samples = written.samples
    merged.outputs.append(quarantine.entry)
    merged.files.append("quarantine.jsonl")
    merged.quarantine = quarantine.reasons
    merged.quarantine_samples = quarantine.samples
    merged.named_samples = quarantine.named_samples

    input_rows = sum(r.rows for r in map_results)
    exported = sum(r.exported for r in reduce_results)
    quarantined = sum(merged.quarantine.values())
    if exported + quarantined != input_rows:
        raise AccountingError(f"{input_rows} input rows, but {exported} exported + {quarantined} quarantined")
    examples = {side: sum(r.sides[side].examples for r in reduce_results if side in r.sides) for side in sides}
    merged.inputs = merged_inputs(map_results)
    merged.counts = {
        "input_rows": input_rows,
        "exported_records": exported,
        "quarantined_rows": quarantined,
        "examples": sum(examples.values()),
        "input_lines": settings.source.input_lines(merged.inputs),
    }
    task_counts: Counter[str] = Counter()
    for result in reduce_results:
        task_counts.update(result.task_counts)
    merged.task_counts = dict(sorted(task_counts.items()))
    merged.split = {
        **settings.split.model_dump(),
        "by": settings.split.by or settings.group_kind,
        "groups": {side: sum(r.sides[side].groups for r in reduce_results if side in r.sides) for side in sides},
        "examples": examples,
    }
    ranges = [r.created_at for r in reduce_results if r.created_at is not None]
    if ranges:
        merged.created_at_range = {
            "start": format_timestamp(min(start for start, _ in ranges)),
            "end": format_timestamp(max(end for _, end in ranges)),
        }
    if not settings.dry_run:
        excluded = {stage["step"]: stage["dropped"] for stage in merged.stages if stage["dropped"]}
        stats: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "task": settings.task.kind, "files": {}}
        for side in sides:
            part = StatsPart()
            for result in reduce_results:
                if side in result.sides:
                    part.add(result.sides[side].stats)
            name = written.stats_names[side]
            stats["files"][name] = file_stats(settings.task.kind, part, excluded, form=settings.task.form)
        merged.outputs.append(write_json(output_dir / "stats.json", stats))
        merged.files.append("stats.json")
        merged.stats = stats
    return merged

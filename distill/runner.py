"""The runner: source -> map (parse, record steps, keys) -> decide -> reduce (group, split, task) -> merge ->
manifest, with the ledger closed. It reads like the plan it drives; each phase lives in `distill.plan`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.collector import cyclic_gc_paused, keep_freed_memory
from distill.config import Settings
from distill.executor import make_executor
from distill.executor.progress import Progress, peak_rss_mib
from distill.fork_server import raise_open_files_limit
from distill.output.documents import RunDigest, write_documents
from distill.output.files import claim_run_directory, write_json
from distill.output.manifest import build_manifest
from distill.output.writers import dataset_writer
from distill.plan.context import Layout, PlanContext
from distill.plan.input_digests import InputDigests
from distill.plan.merge import merge
from distill.plan.prepare import check_open_files, prepare
from distill.plan.spill import read_marker

log = logging.getLogger(__name__)


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


def run(
    settings: Settings,
    output_dir: Path,
    *,
    config: dict[str, Any],
    choices: dict[str, Any] | None = None,
    command: str = "",
) -> RunResult:
    # The directory becomes this run's: a lock, stale temporaries removed, no earlier outputs unless overwrite/resume.
    claim_run_directory(output_dir, overwrite=settings.overwrite, resume=settings.resume)
    for note in settings.notes:
        log.warning(note)
    layout = Layout.of(output_dir)
    keep_freed_memory()
    open_files = raise_open_files_limit()  # before the executor starts its workers, which inherit it
    executor = make_executor(settings.executor)
    with cyclic_gc_paused(), executor, InputDigests() as digests:
        executor.warm_up(settings.source.size_hint())  # what the executor can start while the input is cut
        shards = settings.source.shards(settings.executor.shard_bytes, settings.executor.workers)
        partitions = prepare(layout, shards, config, settings.executor, settings.resume)
        check_open_files(partitions, len(shards), open_files)
        ctx = PlanContext(settings, layout, partitions, settings.executor.compress_spills, config, len(shards))
        log.info("plan: %d shards, %d partitions, %d workers", len(shards), partitions, settings.executor.workers)
        layout.make(partitions, list(range(len(settings.steps))))
        ctx.setup()
        writer = dataset_writer(
            settings.task, output_dir, layout, settings.output_format, ctx.compress, settings.flavour_output
        )

        digests.start(shards)  # the cut inputs' sha256, on whatever CPU the workers leave (`InputDigests`)

        # map: shards a resumed run already finished keep their markers and spills.
        finished = {s.index: read_marker(layout.map_done(s.index)) for s in shards}
        todo = [s for s in shards if finished[s.index] is None]
        progress = Progress("map", sum(s.size for s in shards), "B", done=sum(s.size for s in shards) - sum(s.size for s in todo))
        for result in executor.run_map(ctx, todo, progress):
            finished[result.shard] = result
        progress.close()
        digests.map_done()
        map_results = [finished[s.index] for s in shards]
        shard_ids = [s.index for s in shards]

        executor.run_decide(ctx, shard_ids, sum(result.records for result in map_results))

        reduced = {p: read_marker(layout.reduce_done(p)) for p in range(partitions)}
        todo_partitions = [p for p, result in reduced.items() if result is None]
        progress = Progress("reduce", partitions, "partitions", done=partitions - len(todo_partitions))
        for result in executor.run_reduce(ctx, todo_partitions, shard_ids, writer, progress):
            reduced[result.partition] = result
        progress.close()
        reduce_results = [reduced[p] for p in range(partitions)]

        digests.wait()  # an input that changed since the cut stops the run before any output is final
        merged = merge(ctx, writer, shard_ids, map_results, reduce_results, output_dir)
        digests.fill(merged.inputs)
        log.info("driver: peak RSS %.0f MiB", peak_rss_mib())

    manifest = build_manifest(
        command=command,
        config=config,
        choices={**(choices or {}), "curation.order": settings.step_order},
        inputs=merged.inputs,
        outputs=merged.outputs,
        counts=merged.counts,
        task_counts=merged.task_counts,
        quarantine=merged.quarantine,
        stages=merged.stages,
        split=merged.split,
        created_at_range=merged.created_at_range,
        dry_run=settings.dry_run,
        notes=settings.notes,
        executor=executor.describe(),
    )
    if not settings.dry_run:
        digest = RunDigest(
            manifest, merged.stats, merged.quarantine_samples, merged.example_samples, merged.named_samples
        )
        documents = write_documents(digest, output_dir)
        merged.outputs.extend(documents)
        merged.files.extend(entry["path"] for entry in documents)
    write_json(output_dir / "manifest.json", manifest)
    layout.remove()
    return RunResult(output_dir, manifest, [*merged.files, "manifest.json"])

"""Dataset writers, one per output shape: each reduce partition hands its examples to the writer's
`open_partition`, a slice of its groups at a time, and `finish` assembles the run's files once every partition is
done. The runner never asks which task it serves."""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distill.errors import DistillError
from distill.output.documents import SAMPLES_PER_FILE
from distill.output.files import OutputError, jsonl_bytes, write_json, write_jsonl, write_parquet, write_text
from distill.output.flavours.base import INLINE
from distill.output.flavours.render import FlavourOutput, Rendered
from distill.output.merged_jsonl import merge_into_jsonl
from distill.plan.context import Layout
from distill.plan.spill import BY_PLACE, FRAME_BYTES, frames, read_values, write_line_spill, write_spill
from distill.split import ALL
from distill.tasks.base import Example, Task
from distill.validation import schema_errors


def output_file_name(task_name: str, side: str, output_format: str = "jsonl") -> str:
    return f"{task_name}.{output_format}" if side == ALL else f"{task_name}.{side}.{output_format}"


@dataclass
class Written:
    """What `finish` wrote: manifest entries, the names to report, the stats section name per side, and the first
    lines of each dataset file (for the run's documents)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    stats_names: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class DatasetWriter(ABC):
    def __init__(
        self, task: Task, output_dir: Path, layout: Layout, output_format: str, compress: bool,
        flavour: FlavourOutput | None = None,
    ) -> None:
        self.task = task
        self.output_dir = output_dir
        self.layout = layout
        self.output_format = output_format
        self.compress = compress
        self.flavour = flavour

    @abstractmethod
    def open_partition(self, partition: int, *, frame_bytes: int = FRAME_BYTES) -> PartitionOutput:
        """Where one partition's examples go, a slice of its groups at a time; spills a merge reads have frames of
        about `frame_bytes` (`PlanContext.merge_frame_bytes`)."""

    @abstractmethod
    def finish(self, sides: Sequence[str], partitions: Sequence[Any]) -> Written:
        """The run's dataset files from every partition's part, in partition order."""


class PartitionOutput(ABC):
    """One reduce partition's share of the dataset files, handed over a slice of the partition's groups at a time."""

    @abstractmethod
    def add(self, examples_by_side: dict[str, list[Example]], rendered_by_side: dict[str, list[Rendered]]) -> None:
        """One slice's examples, each side in file order (and their lines in the run's output flavour, aligned with
        them, when it has one)."""

    @abstractmethod
    def close(self) -> Any:
        """Writes (or spills) what is left; returns what `finish` needs from this partition (small, picklable)."""


def encoded_line(file_name: str, line: dict[str, Any]) -> bytes:
    try:
        return jsonl_bytes(line)
    except orjson.JSONEncodeError as error:
        raise OutputError(f"cannot write {file_name}: {error}") from None


class LineFiles(DatasetWriter):
    """One line per example, `<task>[.<side>].<jsonl|parquet>`: each partition spills its sorted lines with their
    sort keys; `finish` merges the partitions' spills into each file in (first record's created_at, id) order,
    holding one batch per partition at a time."""

    def open_partition(self, partition: int, *, frame_bytes: int = FRAME_BYTES) -> LinePartition:
        return LinePartition(self, partition, frame_bytes)

    @property
    def _spilled_lines_final(self) -> bool:
        """Whether every spilled line is the file's line as it stands, sidecar-free (JSONL, with no flavour or one
        that places nothing and keeps provenance inline): the file is then the spills merged as they are."""
        if self.output_format != "jsonl":
            return False
        return self.flavour is None or (self.flavour.final_lines and self.flavour.provenance == INLINE)

    def _merged(
        self, side: str, partitions: int, samples: list[dict[str, Any]]
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        """The lines (and sidecar rows) of every partition's spill in file order, for a flavour's or Parquet's
        writer; JSONL goes through `merge_into_jsonl`, which gives the spills back as it goes."""
        streams = [read_values(self.layout.examples(side, partition)) for partition in range(partitions)]
        for _, line, sidecar in heapq.merge(*streams, key=lambda entry: entry[0]):
            if len(samples) < SAMPLES_PER_FILE:
                samples.append(orjson.loads(line) if isinstance(line, bytes) else line)
            yield line, sidecar

    def finish(self, sides: Sequence[str], partitions: Sequence[Any]) -> Written:
        written = Written()
        flavour_files: list[tuple[str, str]] = []
        for side in sides:
            name = output_file_name(self.task.output_name, side, self.output_format)
            samples: list[dict[str, Any]] = []
            if self.flavour is not None:
                flavour_files.append((side, name))
            if self._spilled_lines_final:
                spills = [self.layout.examples(side, partition) for partition in range(len(partitions))]
                entry, gathered = merge_into_jsonl(self.output_dir / name, spills, self.layout.merging, LineSamples())
                entries, samples = [entry], gathered.samples
            elif self.flavour is not None:
                entries = self.flavour.write(self.output_dir, name, side, self._merged(side, len(partitions), samples))
            else:
                stream = self._merged(side, len(partitions), samples)
                entries = [write_parquet(self.output_dir / name, (line for line, _ in stream), self.task.schema)]
            written.entries.extend(entries)
            written.files.extend(entry["path"] for entry in entries)
            written.stats_names[side] = name
            written.samples[name] = samples
        if self.flavour is not None and flavour_files:
            side_files = self.flavour.write_side_files(self.output_dir, flavour_files)
            written.entries.extend(side_files)
            written.files.extend(entry["path"] for entry in side_files)
        return written


@dataclass
class LineSamples:
    """A dataset file's first lines, kept as it is merged, for the run's documents."""

    samples: list[dict[str, Any]] = field(default_factory=list)

    def line(self, entry: tuple[Any, Any, memoryview]) -> memoryview:
        _, _, line = entry
        if len(self.samples) < SAMPLES_PER_FILE:
            self.samples.append(orjson.loads(line))
        return line


class LinePartition(PartitionOutput):
    """A partition's lines for `LineFiles`: each slice's lines are encoded as the slice is added (in the partition's
    worker, so the merge only copies bytes), and `close` spills each side's in file order."""

    def __init__(self, files: LineFiles, partition: int, frame_bytes: int = FRAME_BYTES) -> None:
        self.files = files
        self.partition = partition
        self.frame_bytes = frame_bytes
        self.entries: dict[str, list[tuple[Any, Any, Any]]] = {}

    def add(self, examples_by_side: dict[str, list[Example]], rendered_by_side: dict[str, list[Rendered]]) -> None:
        files = self.files
        flavour = files.flavour
        for side, examples in examples_by_side.items():
            name = output_file_name(files.task.output_name, side, files.output_format)
            rendered = rendered_by_side.get(side)
            entries = self.entries.setdefault(side, [])
            if rendered is not None and flavour is not None and flavour.final_lines:
                # output.flavor: the flavour's line and its sidecar row, under the canonical example's sort key
                # (1e6 records: the merge phase 4.4 -> 3.2 s when lines were first encoded here, bench/RESULTS.md).
                entries.extend(
                    (
                        e.sort_key(),
                        r.jsonl if r.jsonl is not None else encoded_line(name, r.line),
                        None if r.sidecar is None else encoded_line(name, r.sidecar),
                    )
                    for e, r in zip(examples, rendered)
                )
            elif rendered is not None:
                # ... left as values where the merge still fills in the line's place (verl) or writes Parquet.
                entries.extend((e.sort_key(), r.line, r.sidecar) for e, r in zip(examples, rendered))
            elif files.output_format == "jsonl":
                entries.extend(
                    (e.sort_key(), e.jsonl if e.jsonl is not None else encoded_line(name, e.line), None) for e in examples
                )
            else:
                entries.extend((e.sort_key(), e.line, None) for e in examples)

    def close(self) -> None:
        for side, entries in self.entries.items():
            entries.sort(key=BY_PLACE)  # each slice's are in file order; the partition's spill is, too
            path = self.files.layout.examples(side, self.partition)
            if self.files._spilled_lines_final:  # the file's own lines, for `merge_into_jsonl`
                write_line_spill(
                    path, ((key, None, line) for key, line, _ in entries),
                    compress=self.files.compress, frame_bytes=self.frame_bytes,
                )
            else:
                write_spill(path, frames(entries), compress=self.files.compress, frame_bytes=self.frame_bytes)
        self.entries = {}


COVERAGE_DIR = "coverage"
EXPORT_MANIFEST = "coverage_export_manifest.json"
PACKAGE_README = "README.md"
PACKAGE_FILE_SCHEMAS = {
    "experiences.jsonl": "coverage_experience",
    "evidence_units.jsonl": "coverage_evidence_unit",
    "queries.jsonl": "coverage_query",
    "candidate_memories.jsonl": "coverage_candidate_memory",
    "coverage_matrix.jsonl": "coverage_matrix_cell",
    "annotation_decisions.jsonl": "coverage_annotation_decision",
    "instance.json": "coverage_instance",
}


def package_errors(files: dict[str, Any]) -> list[str]:
    """Each file's rows against its JSON Schema in `schemas/`: `file row N: message` lines, [] when all pass."""
    errors = []
    for name, rows in files.items():
        for number, row in enumerate(rows if isinstance(rows, list) else [rows]):
            errors.extend(
                f"{name} row {number}: {message}" for message in schema_errors(PACKAGE_FILE_SCHEMAS[name], row)
            )
    return errors


class CoveragePackages(DatasetWriter):
    """Memory-coverage packages (docs/coverage-package.md): each partition writes the packages of its groups under
    `coverage/<package>/`; `finish` writes `coverage/coverage_export_manifest.json` listing every package in
    directory order."""

    def open_partition(self, partition: int, *, frame_bytes: int = FRAME_BYTES) -> PackagePartition:
        return PackagePartition(self)  # packages are written as they come: nothing for a merge to read

    def write_packages(
        self, examples_by_side: dict[str, list[Example]], entries: list[dict[str, Any]], packages: list[dict[str, Any]]
    ) -> None:
        """Writes each example's package under `coverage/<package>/`, adding its files to `entries` and its row of
        the export manifest to `packages`."""
        from distill.tasks.coverage_package import GENERATION_MANIFEST, INSTANCE_FILE, generation_manifest, package_readme

        root = self.output_dir / COVERAGE_DIR
        root.mkdir(parents=True, exist_ok=True)
        for side, examples in examples_by_side.items():
            for example in examples:
                line = example.line
                builder, files = self.task.package_files(example, side)  # type: ignore[attr-defined]
                errors = package_errors(files)
                if errors:
                    # Candidates and instances were validated before the ledger closed: rows that break their
                    # schema here mean the builder and schemas/ disagree.
                    raise DistillError(f"coverage package {line['directory']}: {errors[0]}")
                directory = root / line["directory"]
                directory.mkdir(exist_ok=True)
                written = [
                    write_json(directory / name, rows) if name == INSTANCE_FILE else write_jsonl(directory / name, rows)
                    for name, rows in files.items()
                ]
                hashes = {entry["path"]: entry["sha256"] for entry in written}
                manifest = generation_manifest(
                    files, builder.generation_config, builder.generation_config_hash, hashes,
                    self.task.instance_file_entry,  # type: ignore[attr-defined]
                )
                written.append(write_json(directory / GENERATION_MANIFEST, manifest))
                readme = package_readme(
                    line["directory"], line["group"], files[INSTANCE_FILE], manifest["counts"],
                    self.task.params.include_zero_coverage,  # type: ignore[attr-defined]
                )
                written.append(write_text(directory / PACKAGE_README, readme))
                entries.extend({**entry, "path": f"{line['directory']}/{entry['path']}"} for entry in written)
                packages.append({
                    "group": line["group"],
                    "instance_id": line["instance_id"],
                    "directory": line["directory"],
                    "split": side,
                    "coverage_matrix": f"{line['directory']}/coverage_matrix.jsonl",
                    "candidate_memories": f"{line['directory']}/candidate_memories.jsonl",
                    "candidate_generation_manifest": f"{line['directory']}/{GENERATION_MANIFEST}",
                })

    def finish(self, sides: Sequence[str], partitions: Sequence[Any]) -> Written:
        root = self.output_dir / COVERAGE_DIR
        root.mkdir(parents=True, exist_ok=True)
        packages = sorted((p for part in partitions for p in part["packages"]), key=lambda p: p["directory"])
        by_directory = {p["directory"]: [] for p in packages}
        for part in partitions:
            for entry in part["entries"]:
                by_directory[entry["path"].split("/")[0]].append(entry)
        entries = [entry for directory in by_directory for entry in by_directory[directory]]
        export = {"schema_version": 1, "package_count": len(packages), "packages": packages}
        entries.append(write_json(root / EXPORT_MANIFEST, export))
        written = Written()
        written.entries = [{**entry, "path": f"{COVERAGE_DIR}/{entry['path']}"} for entry in entries]
        written.files = [COVERAGE_DIR]
        written.stats_names = {side: f"{self.task.output_name}/{side}" for side in sides}
        return written


class PackagePartition(PartitionOutput):
    """A partition's packages for `CoveragePackages`, written as each slice is added."""

    def __init__(self, packages: CoveragePackages) -> None:
        self.writer = packages
        self.entries: list[dict[str, Any]] = []
        self.packages: list[dict[str, Any]] = []

    def add(self, examples_by_side: dict[str, list[Example]], rendered_by_side: dict[str, list[Rendered]]) -> None:
        self.writer.write_packages(examples_by_side, self.entries, self.packages)

    def close(self) -> dict[str, Any]:
        return {"entries": self.entries, "packages": self.packages}


WRITERS: dict[str, type[DatasetWriter]] = {"lines": LineFiles, "coverage_packages": CoveragePackages}


def dataset_writer(
    task: Task, output_dir: Path, layout: Layout, output_format: str, compress: bool, flavour: FlavourOutput | None = None
) -> DatasetWriter:
    return WRITERS[task.writer](task, output_dir, layout, output_format, compress, flavour)

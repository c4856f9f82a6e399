"""The runner's two calls into the flavours: render a side's valid examples, then write them.

`render_side` runs where examples are built (it may refuse a line, and a refused line's records must reach the
quarantine before the ledger closes); `write_side` and `write_side_files` run where files are written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from distill.output.files import atomic_file, jsonl_bytes, write_json, write_jsonl, write_parquet, write_text
from distill.output.flavours.base import INLINE, Flavour, Refused, RenderContext
from distill.reasons import Reason
from distill.tasks.base import Example
from distill.validation import schema_errors

SIDECAR_SCHEMA = "provenance_sidecar_line"


@dataclass(frozen=True)
class Rendered:
    """One example as its flavour writes it: the line, and its sidecar row when provenance goes beside it."""

    line: dict[str, Any]
    sidecar: dict[str, Any] | None
    jsonl: bytes | None = None
    """The line encoded already, as a JSONL file holds it, where it is the canonical example's (`Example.jsonl`)."""


@dataclass(frozen=True)
class RefusedLine:
    example: Example
    reason: Reason
    errors: tuple[str, ...]


def render_side(
    flavour: Flavour, context: RenderContext, provenance: str, examples: Sequence[Example], file_name: str
) -> tuple[list[Rendered], list[RefusedLine]]:
    """Renders each valid canonical example (in file order) and checks the line with its sidecar. Returns the
    rendered lines, aligned with the examples kept, and the refused ones (naming the file and example; a refused
    line has no line number, since it is never written)."""
    rendered: list[Rendered] = []
    refused: list[RefusedLine] = []
    for example in examples:
        where = f"{file_name}, example {example.id}"
        try:
            row = flavour.render(example, context)
        except Refused as refusal:
            refused.append(RefusedLine(example, refusal.reason, (f"{where}: {refusal}",)))
            continue
        out = attach_provenance(row, example.line, provenance)
        errors = line_and_sidecar_errors(flavour, context.shape, out)
        if errors:
            refused.append(RefusedLine(example, Reason.schema_violation, tuple(f"{where}: {e}" for e in errors)))
            continue
        rendered.append(out)
    return rendered, refused


def attach_provenance(row: dict[str, Any], canonical: dict[str, Any], provenance: str) -> Rendered:
    """The canonical line's `id` and `provenance` go into the row (inline) or into its sidecar row."""
    carried = {"id": canonical["id"], "provenance": canonical["provenance"]}
    if provenance == INLINE:
        return Rendered({**row, **carried}, None)
    return Rendered(row, carried)


def line_and_sidecar_errors(flavour: Flavour, shape: str, rendered: Rendered) -> list[str]:
    """The write-time check of a line together with its sidecar row: the sidecar's own schema; the flavour's line
    schema; for the trl flavour the line joined with its sidecar is the canonical line, checked against the task's
    schema again (the firewall's second layer holds for the pair, not only for the line before it was split)."""
    errors: list[str] = []
    line = rendered.line
    if rendered.sidecar is not None:
        errors += schema_errors(SIDECAR_SCHEMA, rendered.sidecar)
        if flavour.name == "trl":
            errors += schema_errors(shape, {**line, **rendered.sidecar})  # the shape is the task's line schema
            return errors
    line_schema = flavour.schema(shape)
    if line_schema is not None:
        bare = {k: v for k, v in line.items() if k not in ("id", "provenance")}
        errors += schema_errors(line_schema, bare)
    return errors


def sidecar_name(file_name: str) -> str:
    """`sft.train.jsonl` -> `sft.train.provenance.jsonl`: provenance aligned with the data file by line."""
    return f"{file_name.rsplit('.', 1)[0]}.provenance.jsonl"


def write_side(
    output_dir: Path, file_name: str, side: str, stream: Iterable[tuple[dict[str, Any], dict[str, Any] | None]],
    flavour: Flavour, output_format: str, parquet_schema: str, provenance: str,
) -> list[dict[str, Any]]:
    """The side's data file and, with output.provenance=sidecar, its provenance sidecar, written together from one
    pass over the merged (line, sidecar row) stream: manifest entries for both."""
    # A line encoded already (bytes) is final: its flavour places nothing.
    if provenance == INLINE:
        lines = (
            line if isinstance(line, bytes) else flavour.place(line, index, side) for index, (line, _) in enumerate(stream)
        )
        return [write_dataset(output_dir / file_name, lines, output_format, parquet_schema)]
    with JsonlSink(output_dir / sidecar_name(file_name)) as sidecar:
        def lines() -> Iterator[dict[str, Any] | bytes]:
            for index, (line, row) in enumerate(stream):
                sidecar.add(row)
                yield line if isinstance(line, bytes) else flavour.place(line, index, side)

        entry = write_dataset(output_dir / file_name, lines(), output_format, parquet_schema)
    return [entry, sidecar.entry]


def write_dataset(path: Path, lines: Iterable[dict[str, Any]], output_format: str, schema_name: str) -> dict[str, Any]:
    return write_parquet(path, lines, schema_name) if output_format == "parquet" else write_jsonl(path, lines)


class JsonlSink:
    """A JSONL file filled row by row while another file is written from the same stream (atomic, hashed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.rows = 0
        self.entry: dict[str, Any] = {}

    def __enter__(self) -> JsonlSink:
        self._file = atomic_file(self.path)
        self._handle = self._file.__enter__()
        return self

    def add(self, row: Any) -> None:
        data = row if isinstance(row, bytes) else jsonl_bytes(row)
        self.digest.update(data)
        self._handle.write(data)
        self.rows += 1

    def __exit__(self, *exc: Any) -> None:
        self._file.__exit__(*exc)
        self.entry = {"path": self.path.name, "sha256": self.digest.hexdigest(), "rows": self.rows}


def write_side_files(output_dir: Path, flavour: Flavour, files: Sequence[tuple[str, str]], context: RenderContext) -> list[dict[str, Any]]:
    """The flavour's files beside the data (LLaMA-Factory's dataset_info.json, axolotl's datasets block)."""
    entries = []
    for name, value in sorted(flavour.side_files(files, context).items()):
        writer = write_text if isinstance(value, str) else write_json
        entries.append(writer(output_dir / name, value))
    return entries


@dataclass(frozen=True)
class FlavourOutput:
    """The run's flavour with what it needs: the runner's one handle on `output.flavor`."""

    flavour: Flavour
    context: RenderContext
    provenance: str
    output_format: str

    def render(self, examples: Sequence[Example], file_name: str) -> tuple[list[Rendered], list[RefusedLine]]:
        """The examples' lines in this flavour, and the ones it refuses. Not called where the flavour
        `writes_examples_as_built`: the writers then take each example's own line as it is."""
        return render_side(self.flavour, self.context, self.provenance, examples, file_name)

    @cached_property
    def writes_examples_as_built(self) -> bool:
        """Whether this flavour's JSONL line, provenance inline, is the canonical example's line byte for byte and
        has no schema of its own to meet (the trl flavour, the default)."""
        return (
            self.flavour.writes_canonical_lines and self.provenance == INLINE and self.output_format == "jsonl"
            and self.flavour.schema(self.context.shape) is None
        )

    @property
    def final_lines(self) -> bool:
        """Whether a rendered line is what the file holds (JSONL, a flavour that places nothing): encoded where it
        is rendered, in the partition's worker, instead of in the merge."""
        return self.output_format == "jsonl" and not self.flavour.places_lines

    def write(
        self, output_dir: Path, file_name: str, side: str,
        stream: Iterable[tuple[dict[str, Any] | bytes, dict[str, Any] | bytes | None]],
    ) -> list[dict[str, Any]]:
        """Writes one side's file (and sidecar) from its merged (line, sidecar row) stream, in file order; a line or
        row given as bytes is written as it is."""
        parquet_schema = self.flavour.schema(self.context.shape) or self.context.shape
        return write_side(output_dir, file_name, side, stream, self.flavour, self.output_format, parquet_schema, self.provenance)

    def write_side_files(self, output_dir: Path, files: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        return write_side_files(output_dir, self.flavour, files, self.context)

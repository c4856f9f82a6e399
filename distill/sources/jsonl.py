from __future__ import annotations

import glob
import hashlib
import os
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from distill.errors import DistillError
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin, Record
from distill.sources.base import SOURCES, Parsed, Shard, Source, SourceParams


class JsonlParams(SourceParams):
    path: str


def resolve_files(pattern: str, key: str, suffixes: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """(root, files in sorted order) for a file, a directory (searched recursively) or a glob."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
        if not files:
            raise DistillError(f"{key}: no {'/'.join(suffixes)} files under {pattern}")
        return path, files
    if glob.has_magic(pattern):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
        if not files:
            raise DistillError(f"{key}: the glob {pattern} matches no file")
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
        return root, files
    raise DistillError(f"{key}: no such file, directory or glob: {pattern}")


CUT_CHUNK_BYTES = 8 << 20



def _has_non_finite(value: Any) -> bool:
    """pydantic's JSON parser reads NaN, Infinity and overflowing floats that orjson (the full path) rejects."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    return False


def fast_record(line: bytes, origin: Origin) -> Record | None:
    """A valid line in the record's own shape, validated from its raw bytes by pydantic-core in one pass (about
    2.4x the rows/s of decode -> field map -> validate, see bench/RESULTS.md); None when the line needs the full
    path (a field map, keys the record does not have, no id, anything invalid), which then gives the same record or
    the same quarantine row it always did."""
    if b'"origin"' in line:  # the input names the field the source sets: the full path moves it to metadata
        return None
    try:
        record = Record.model_validate_json(line)
    except (ValidationError, ValueError, OverflowError):
        return None
    # A sum of floats is finite only if every one is (a huge but finite sum just takes the full path).
    if record.embedding is not None and not math.isfinite(sum(record.embedding)):
        return None
    if (record.metadata and _has_non_finite(record.metadata)) or (record.tool_calls and _has_non_finite(record.tool_calls)):
        return None
    if record.provenance is not None and _has_non_finite(record.provenance.model_extra):
        return None
    # The record is frozen; `origin` is set once here, as the full path sets it before validation.
    object.__setattr__(record, "origin", origin)
    return record


def cut_points(path: Path, target_bytes: int) -> tuple[str, list[tuple[int, int]]]:
    """(the file's sha256, [(start byte, first line number)] of ranges of about `target_bytes`, each starting at
    the beginning of a line) in one sequential read."""
    digest = hashlib.sha256()
    cuts = [(0, 1)]
    offset, lines, next_cut, pending = 0, 0, target_bytes, False
    with path.open("rb") as handle:
        while chunk := handle.read(CUT_CHUNK_BYTES):
            digest.update(chunk)
            position = 0
            while True:
                if not pending and offset + len(chunk) <= next_cut:
                    break
                # The range ends at the first newline at or after the target.
                at = chunk.find(b"\n", max(position, next_cut - offset) if not pending else position)
                if at < 0:
                    pending = True
                    break
                pending = False
                lines_before = lines + chunk.count(b"\n", 0, at + 1)
                cuts.append((offset + at + 1, lines_before + 1))
                position = at + 1
                next_cut = offset + at + 1 + target_bytes
            lines += chunk.count(b"\n")
            offset += len(chunk)
    if cuts[-1][0] >= offset and len(cuts) > 1:
        cuts.pop()
    return digest.hexdigest(), cuts


def range_lines(path: Path, start: int, stop: int | None, first_line: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the lines that begin in [start, stop)."""
    with path.open("rb") as handle:
        handle.seek(start)
        position = start
        for number, line in enumerate(handle, start=first_line):
            if stop is not None and position >= stop:
                return
            position += len(line)
            yield number, line


def numbered_lines(
    path: Path, origin_path: str, inputs: list[dict[str, Any]], **entry: Any
) -> Iterator[tuple[bytes, Origin]]:
    """The file's non-blank lines with their origin; once read, appends {path, sha256, rows, **entry} to `inputs`."""
    digest = hashlib.sha256()
    rows = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            digest.update(line)
            if not line.strip():
                continue
            rows += 1
            yield line, Origin(path=origin_path, line=number)
    inputs.append({"path": str(path.resolve()), "sha256": digest.hexdigest(), "rows": rows, **entry})


@SOURCES.register("jsonl")
class JsonlSource(Source):
    """JSON Lines files: one logged record per line, read in sorted file order, line by line.

    A line that is not UTF-8 (`invalid_utf8`) or not JSON (`invalid_json`) becomes a quarantine row and the rest of
    the file is still read; blank lines are not rows.
    """

    kind = "jsonl"
    Params = JsonlParams
    params: JsonlParams


    def check(self) -> None:
        self.root, self.files = resolve_files(self.params.path, "source.path", (".jsonl", ".json", ".ndjson"))

    def read(self) -> Iterator[Parsed]:
        self.check()
        self._inputs = []
        for path in self.files:
            for line, origin in numbered_lines(path, path.relative_to(self.root).as_posix(), self._inputs):
                yield self._parse_line(line, origin)

    def shards(self, target_bytes: int) -> list[Shard]:
        """Files larger than `target_bytes` are cut into line-aligned byte ranges; each shard knows its first
        line's number, so origins and `<file>:<line>` ids are those of a whole-file read."""
        self.check()
        shards: list[Shard] = []
        for path in self.files:
            relative = path.relative_to(self.root).as_posix()
            digest, cuts = cut_points(path, target_bytes)
            size = path.stat().st_size
            ends = [start for start, _ in cuts[1:]] + [size]
            for (start, first_line), stop in zip(cuts, ends):
                shards.append(Shard(
                    len(shards), str(path), relative, start, stop if stop < size else None, first_line,
                    stop - start, digest,
                ))
        return shards

    def read_shard(self, shard: Shard) -> Iterator[Parsed]:
        if shard.path is None:
            yield from self.read()
            return
        rows = 0
        for number, line in range_lines(Path(shard.path), shard.start, shard.stop, shard.first_line):
            if not line.strip():
                continue
            rows += 1
            yield self._parse_line(line, Origin(path=shard.relative, line=number))
        self._inputs = [{"path": str(Path(shard.path).resolve()), "sha256": shard.sha256, "rows": rows}]

    def shard_inputs(self, shard: Shard) -> list[dict[str, Any]]:
        return list(self._inputs)

    def _parse_line(self, line: bytes, origin: Origin) -> Parsed:
        if not self.params.fields:
            record = fast_record(line, origin)
            if record is not None:
                return record
        fallback_id = f"{origin.path}:{origin.line}"
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as bad_bytes:
                text = line.decode("utf-8", errors="replace")
                return QuarantineRow(
                    "parse", Reason.invalid_utf8, (f"byte {bad_bytes.start}: {bad_bytes.reason}",),
                    fallback_id, origin, text.rstrip("\r\n"),
                )
            return QuarantineRow("parse", Reason.invalid_json, (str(error),), fallback_id, origin, text.rstrip("\r\n"))
        return self.to_record(row, origin, fallback_id)

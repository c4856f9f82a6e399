from __future__ import annotations

import glob
import hashlib
import os
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
from pydantic import AfterValidator, ValidationError

from distill.errors import DistillError
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin, Record
from distill.output.files import shown_path, unwritable
from distill.sources.base import SOURCES, Parsed, Shard, Source, SourceParams
from distill.sources.json_document import BOM, CHUNK_BYTES, array_elements, document_shape


def _named(path: str) -> str:
    if not path.strip():
        # An empty path would read the working directory recursively, an earlier run's quarantine included.
        raise ValueError("empty; name a file, a directory or a glob")
    return path


InputPath = Annotated[str, AfterValidator(_named)]


class JsonlParams(SourceParams):
    path: InputPath


def _listed(directory: Path, suffixes: tuple[str, ...], unreadable: list[str]) -> list[Path]:
    """Files under `directory` (recursively) with one of `suffixes`; a sub-directory that cannot be listed is
    added to `unreadable` (Path.rglob would skip it silently)."""
    def refused(error: OSError) -> None:
        unreadable.append(f"{shown_path(error.filename)}/ ({error.strerror})")

    found = []
    for folder, _, names in os.walk(directory, onerror=refused):
        found.extend(Path(folder, name) for name in names if name.endswith(suffixes))
    return sorted(path for path in found if path.is_file())


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except OSError as error:
        return f"{shown_path(path)} ({error.strerror})"


def resolve_files(pattern: str, key: str, suffixes: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """(root, files in sorted order) for a file, a directory (searched recursively) or a glob. Every input that
    cannot be read (a file or a sub-directory without permission) is named up front, in one error."""
    path = Path(pattern).expanduser()
    unreadable: list[str] = []
    if path.is_file():
        root, files = path.parent, [path]
    elif path.is_dir():
        root, files = path, _listed(path, suffixes, unreadable)
        if not files and not unreadable:
            raise DistillError(f"{key}: no {'/'.join(suffixes)} files under {pattern}")
    elif glob.has_magic(pattern):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
        if not files:
            raise DistillError(f"{key}: the glob {pattern} matches no file")
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
    else:
        raise DistillError(f"{key}: no such file, directory or glob: {pattern}")
    unreadable.extend(problem for problem in map(_unreadable, files) if problem)
    if unreadable:
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        raise DistillError(f"{key}: cannot read {', '.join(unreadable[:5])}{more}")
    return root, files


def relative_name(path: Path, root: Path) -> str:
    """The file relative to the source root, as origins and ids show it (a name that is not UTF-8 percent-encoded)."""
    return shown_path(path.relative_to(root).as_posix())


class _Hashing:
    """A binary reader that hashes what passes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


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
    # What the full path refuses as unwritable (nesting deeper than distill writes, integers beyond 64 bits).
    if (record.metadata and unwritable(record.metadata)) or (record.tool_calls and unwritable(record.tool_calls)):
        return None
    if record.provenance is not None and record.provenance.model_extra and unwritable(record.provenance.model_extra):
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
    """The file's non-blank lines with their origin (a UTF-8 byte order mark before the first is not part of it);
    once read, appends {path, sha256, rows, **entry} to `inputs`."""
    digest = hashlib.sha256()
    rows = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            digest.update(line)
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM):]
            if not line.strip():
                continue
            rows += 1
            yield line, Origin(path=origin_path, line=number)
    inputs.append({"path": shown_path(path.resolve()), "sha256": digest.hexdigest(), "rows": rows, **entry})


@SOURCES.register("jsonl")
class JsonlSource(Source):
    """JSON Lines files: one logged record per line, read in sorted file order, line by line. A `.json` file holding
    one JSON array is streamed as the array's rows (`origin = {path, row}`), one holding one object is one row.

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
            relative = relative_name(path, self.root)
            shape = self._document_shape(path)
            if shape == "lines":
                for line, origin in numbered_lines(path, relative, self._inputs):
                    yield self._parse_line(line, origin, f"{origin.path}:{origin.line}")
            else:
                yield from self._read_document(path, relative, shape)

    def shards(self, target_bytes: int) -> list[Shard]:
        """Files larger than `target_bytes` are cut into line-aligned byte ranges; each shard knows its first
        line's number, so origins and `<file>:<line>` ids are those of a whole-file read."""
        self.check()
        shards: list[Shard] = []
        for path in self.files:
            relative = relative_name(path, self.root)
            if self._document_shape(path) != "lines":  # one JSON document: read whole, as one shard
                size = path.stat().st_size
                shards.append(Shard(len(shards), str(path), relative, 0, None, 1, size, None))
                continue
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
        path = Path(shard.path)
        if shard.start == 0 and (shape := self._document_shape(path)) != "lines":
            self._inputs = []
            yield from self._read_document(path, shard.relative, shape)
            return
        rows = 0
        for number, line in range_lines(path, shard.start, shard.stop, shard.first_line):
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM):]
            if not line.strip():
                continue
            rows += 1
            yield self._parse_line(line, Origin(path=shard.relative, line=number))
        self._inputs = [{"path": shown_path(path.resolve()), "sha256": shard.sha256, "rows": rows}]

    def shard_inputs(self, shard: Shard) -> list[dict[str, Any]]:
        return list(self._inputs)

    @staticmethod
    def _document_shape(path: Path) -> str:
        if path.suffix != ".json":
            return "lines"
        with path.open("rb") as handle:
            return document_shape(handle)

    def _read_document(self, path: Path, relative: str, shape: str) -> Iterator[Parsed]:
        """A `.json` file holding one array (each element a row, `origin = {path, row}` from 0) or one object."""
        rows = 0
        with path.open("rb") as handle:
            reader = _Hashing(handle)
            elements = array_elements(reader) if shape == "array" else iter([reader.read().removeprefix(BOM)])
            for row, element in enumerate(elements):
                rows += 1
                yield self._parse_line(element, Origin(path=relative, row=row), f"{relative}#{row}")
            while reader.read(CHUNK_BYTES):
                pass  # the hash covers the whole file, whatever follows the array
        self._inputs.append({"path": shown_path(path.resolve()), "sha256": reader.digest.hexdigest(), "rows": rows})

    def _parse_line(self, line: bytes, origin: Origin, fallback_id: str | None = None) -> Parsed:
        if not self.params.fields:
            record = fast_record(line, origin)
            if record is not None:
                return record
        fallback_id = fallback_id or f"{origin.path}:{origin.line}"
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

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
from pydantic import AfterValidator

from distill.errors import DistillError
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin
from distill.output.files import shown_path
from distill.sources.base import SOURCES, Parsed, Source, SourceParams
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
            shape = "lines"
            if path.suffix == ".json":
                with path.open("rb") as handle:
                    shape = document_shape(handle)
            if shape == "lines":
                for line, origin in numbered_lines(path, relative, self._inputs):
                    yield self._parse_line(line, origin, f"{origin.path}:{origin.line}")
            else:
                yield from self._read_document(path, relative, shape)

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

    def _parse_line(self, line: bytes, origin: Origin, fallback_id: str) -> Parsed:
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

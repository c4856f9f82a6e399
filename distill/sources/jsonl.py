from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, BinaryIO

import numpy as np
import xxhash
from pydantic import AfterValidator

from distill.hashing import HASH_CHUNK_BYTES, combined, content_pieces, file_sha256
from distill.output.files import shown_path
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin
from distill.sources.base import SOURCES, FileSource, Parsed, Shard, SourceParams, balanced_count
from distill.sources.fast_lane import fast_record
from distill.sources.files import (
    compression_of,
    text_bytes_estimate,
    relative_name,
    decode_line,
    numbered_lines,
    open_input,
    row_label,
    strip_compression,
    with_compression,
)
from distill.sources.json_document import BOM, CHUNK_BYTES, array_elements, document_shape

JSONL_SUFFIXES = with_compression((".jsonl", ".json", ".ndjson"))
SHAPE_HEAD_BYTES = 1 << 18


def _named(path: str) -> str:
    if not path.strip():
        # An empty path would read the working directory recursively, an earlier run's quarantine included.
        raise ValueError("empty; name a file, a directory or a glob")
    return path


InputPath = Annotated[str, AfterValidator(_named)]


class JsonlParams(SourceParams):
    path: InputPath


class _Hashing:
    """A binary reader that hashes what passes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


CUT_CHUNK_BYTES = HASH_CHUNK_BYTES
"""Read, hashed and counted while it stays in a core's L2 cache: the 1e6 bench's cut took 0.55 s in 8 MiB chunks,
0.40 s in 512 KiB."""


@dataclass
class PieceCut:
    """What one thread found in its piece of a file (`content_pieces`): its XXH3-128, its newlines, and for each
    target in it the first newline at or after it, with the newlines before that one in the piece. A target whose
    newline lies beyond the piece is left to the next piece's first newline."""

    digest: bytes = b""
    newlines: int = 0
    found: list[tuple[int, int]] = field(default_factory=list)
    """(position of the newline, newlines in the piece before it)"""
    open_target: bool = False
    """The piece ended before a newline at or after its last target."""
    first: tuple[int, int] | None = None
    """Its first newline, as in `found`."""


def cut_points(path: Path, target_bytes: int) -> tuple[str, list[tuple[int, int]]]:
    """(the file's `file_content_hash`, [(start byte, first line number)] of ranges of about `target_bytes`, each
    starting at the beginning of a line): range k > 0 starts after the first newline at or after byte
    k * target_bytes (several targets before one newline give one range). Each of the file's `content_pieces` is
    read on a thread of its own (the read, XXH3 and numpy's count let go of the GIL), its lines counted with numpy.
    The manifest's sha256 of the file is taken later, beside the map and the decide (`InputDigests`). Read, not
    mapped: a mapped file's pages count in the process's RSS (the driver's peak went from 0.1 to 1.8 GB)."""
    size = path.stat().st_size
    step = max(target_bytes, 1)
    pieces = content_pieces(size)
    cuts = [PieceCut() for _ in pieces]
    if len(pieces) == 1:
        _cut_piece(path, *pieces[0], step, cuts[0])
    else:
        with ThreadPoolExecutor(len(pieces), thread_name_prefix="distill-cut") as threads:
            list(threads.map(lambda i: _cut_piece(path, *pieces[i], step, cuts[i]), range(len(pieces))))
    starts: list[tuple[int, int]] = [(0, 1)]
    before = 0  # newlines in the pieces before this one
    waiting = False  # a target of an earlier piece still waits for a newline
    for piece in cuts:
        found = piece.found
        if waiting and piece.first is not None:
            found = [piece.first, *found]
            waiting = False
        for at, newlines in found:
            start = at + 1
            if start > starts[-1][0] and start < size:
                starts.append((start, before + newlines + 2))
        waiting = waiting or piece.open_target
        before += piece.newlines
    return combined([piece.digest for piece in cuts], size), starts


def _cut_piece(path: Path, begin: int, end: int, step: int, cut: PieceCut) -> None:
    """Reads [begin, end) of the file into `cut` (see PieceCut)."""
    digest = xxhash.xxh3_128()
    target = -(-begin // step) * step or step  # the first target in the piece (byte 0 is no target)
    offset, newlines = begin, 0
    with path.open("rb") as handle:
        handle.seek(begin)
        while offset < end and (chunk := handle.read(min(CUT_CHUNK_BYTES, end - offset))):
            digest.update(chunk)
            counted = 0
            if cut.first is None:
                at = chunk.find(b"\n")
                if at >= 0:
                    cut.first = (offset + at, newlines)
            while target < offset + len(chunk):
                at = chunk.find(b"\n", max(target - offset, counted))
                if at < 0:
                    break
                newlines += _newlines(chunk, counted, at)
                counted = at
                cut.found.append((offset + at, newlines))
                target = (offset + at) // step * step + step  # the next target past this newline
            newlines += _newlines(chunk, counted, len(chunk))
            offset += len(chunk)
    cut.digest = digest.digest()
    cut.newlines = newlines
    cut.open_target = target < end


def _newlines(chunk: bytes, begin: int, end: int) -> int:
    return int(np.count_nonzero(np.frombuffer(chunk, dtype=np.uint8, count=end - begin, offset=begin) == ord("\n")))


RANGE_READ_BYTES = 1 << 20


def range_lines(path: Path, start: int, stop: int | None, first_line: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without its newline, whether it had one: only a file's last line may not) of the lines
    that begin in [start, stop). Read in blocks split at newlines, and no line copied again after the split (not
    joined to its block's neighbour, not given its newline back): 3.7-3.9 -> 2.3-2.7 µs a bench line, with the
    blank-line test (1e5 lines, best of 5)."""
    number, position, tail = first_line, start, b""
    with path.open("rb") as handle:
        handle.seek(start)
        while block := handle.read(RANGE_READ_BYTES):
            lines = block.split(b"\n")
            if tail:
                lines[0] = tail + lines[0]  # only the line that straddles two blocks is joined
            tail = lines.pop()
            for line in lines:
                if stop is not None and position >= stop:
                    return
                position += len(line) + 1
                yield number, line, True
                number += 1
    if tail and (stop is None or position < stop):
        yield number, tail, False


@SOURCES.register("jsonl")
class JsonlSource(FileSource):
    """JSON Lines files: one logged record per line, read in sorted file order, line by line. A `.json` file holding
    one JSON array is streamed as the array's rows (`origin = {path, row}`), one holding one object is one row.
    Files may be gzip, zstd, bz2 or xz compressed.

    A line that is not UTF-8 (`invalid_utf8`) or not JSON (`invalid_json`) becomes a quarantine row and the rest of
    the file is still read; blank lines are not rows.
    """

    kind = "jsonl"
    Params = JsonlParams
    params: JsonlParams
    suffixes = JSONL_SUFFIXES

    def read_file(self, path: Path, relative: str) -> Iterator[Parsed]:
        """One whole file's rows; appends its entry to the inputs once read."""
        shape = self._document_shape(path)
        if shape == "lines":
            for line, origin in numbered_lines(path, relative, self._inputs):
                yield self._parse_line(line, origin)
        else:
            yield from self._read_document(path, relative, shape)

    def shards(self, target_bytes: int, multiple: int = 1) -> list[Shard]:
        """Plain JSON Lines files larger than `target_bytes` are cut into line-aligned byte ranges, a multiple of
        `multiple` of them; each shard knows its first line's number, so origins and `<file>:<line>` ids are those of
        a whole-file read. A compressed file or a JSON document cannot be cut: it is one shard (without a sha256: read
        whole by `read_file`)."""
        self.check()
        shards: list[Shard] = []
        for path in self.files:
            relative = relative_name(path, self.root)
            size = path.stat().st_size
            compression = compression_of(path, "source.path")
            if compression is not None or self._document_shape(path) != "lines":
                text = text_bytes_estimate(path, compression)
                shards.append(Shard(len(shards), str(path), relative, 0, None, 1, text, None))
                continue
            pieces = balanced_count(math.ceil(size / target_bytes) if target_bytes > 0 else 1, multiple)
            content_hash, cuts = cut_points(path, math.ceil(size / pieces) if pieces > 1 else target_bytes)
            ends = [start for start, _ in cuts[1:]] + [size]
            for (start, first_line), stop in zip(cuts, ends):
                shards.append(Shard(
                    len(shards), str(path), relative, start, stop if stop < size else None, first_line,
                    stop - start, content_hash=content_hash,
                ))
        return shards

    def read_shard(self, shard: Shard) -> Iterator[Parsed]:
        if shard.path is None or shard.content_hash is None:  # the whole source, or a whole file
            yield from super().read_shard(shard)
            return
        path = Path(shard.path)
        rows = 0
        for number, line, terminated in range_lines(path, shard.start, shard.stop, shard.first_line):
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM):]
            if not line or line.isspace():  # a blank line (`strip` would copy every line to tell)
                continue
            rows += 1
            yield self._parse_line(line, Origin(path=shard.relative, line=number), terminated)
        # The file's sha256 is filled in by the runner (`InputDigests`), which hashes each cut file once.
        self._inputs = [{"path": shown_path(path.resolve()), "sha256": None, "rows": rows}]

    @staticmethod
    def _document_shape(path: Path) -> str:
        if not strip_compression(path.name).endswith(".json"):
            return "lines"
        with open_input(path, "source.path") as handle:
            if compression_of(path, "source.path") is None:
                return document_shape(handle)
            # A decompressing stream cannot rewind: judge the shape on a copy of its start.
            return document_shape(io.BytesIO(handle.read(SHAPE_HEAD_BYTES)))

    def _read_document(self, path: Path, relative: str, shape: str) -> Iterator[Parsed]:
        """A `.json` file holding one array (each element a row, `origin = {path, row}` from 0) or one object."""
        rows = 0
        after = bytearray()
        with open_input(path, "source.path") as handle:
            reader = _Hashing(handle)
            elements = array_elements(reader, after) if shape == "array" else iter([reader.read().removeprefix(BOM)])
            for row, element in enumerate(elements):
                rows += 1
                yield self._parse_line(element, Origin(path=relative, row=row))
            while reader.read(CHUNK_BYTES):
                pass  # the hash covers the whole file, whatever follows the array
        if after:  # a second array, or text, after the array's closing bracket: one invalid_json row
            origin = Origin(path=relative, row=rows)
            rows += 1
            yield QuarantineRow(
                "parse", Reason.invalid_json, ("data after the closing bracket of the file's array",),
                row_label(origin), origin, after.decode("utf-8", errors="replace").rstrip(),
            )
        compressed = compression_of(path, "source.path") is not None
        sha256 = file_sha256(path) if compressed else reader.digest.hexdigest()  # the file on disk
        self._inputs.append({"path": shown_path(path.resolve()), "sha256": sha256, "rows": rows})

    def _parse_line(self, line: bytes, origin: Origin, terminated: bool | None = None) -> Parsed:
        """`terminated`: the line was given without the newline it had (the full path reads the line as it was:
        orjson's error positions count the newline)."""
        if not self.params.fields:
            record = fast_record(line, origin)
            if record is not None:
                return record
        if terminated:
            line += b"\n"
        fallback_id = row_label(origin)  # `<file>:<line>`, or `<file>#<row>` for a document's rows
        row = decode_line(line, origin, fallback_id)
        return row if isinstance(row, QuarantineRow) else self.to_record(row, origin, fallback_id)

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from distill.quarantine import QuarantineRow
from distill.record import Origin
from distill.sources.base import SOURCES, Parsed, Source, SourceParams
from distill.sources.files import decode_line, numbered_lines, resolve_files, row_label, with_compression


JSONL_SUFFIXES = with_compression((".jsonl", ".json", ".ndjson"))


class JsonlParams(SourceParams):
    path: str


@SOURCES.register("jsonl")
class JsonlSource(Source):
    """JSON Lines files: one logged record per line, read in sorted file order, line by line.

    A line that is not UTF-8 (`invalid_utf8`) or not JSON (`invalid_json`) becomes a quarantine row and the rest of
    the file is still read; blank lines are not rows. Files may be gzip, zstd, bz2 or xz compressed.
    """

    kind = "jsonl"
    Params = JsonlParams
    params: JsonlParams


    def check(self) -> None:
        self.root, self.files = resolve_files(self.params.path, "source.path", JSONL_SUFFIXES)

    def read(self) -> Iterator[Parsed]:
        self.check()
        self._inputs = []
        for path in self.files:
            yield from self.read_file(path, path.relative_to(self.root).as_posix())

    def read_file(self, path: Path, relative: str) -> Iterator[Parsed]:
        """One file's rows (a map shard); appends its entry to the inputs once read."""
        for line, origin in numbered_lines(path, relative, self._inputs):
            yield self._parse_line(line, origin)

    def _parse_line(self, line: bytes, origin: Origin) -> Parsed:
        fallback_id = row_label(origin)
        row = decode_line(line, origin, fallback_id)
        return row if isinstance(row, QuarantineRow) else self.to_record(row, origin, fallback_id)

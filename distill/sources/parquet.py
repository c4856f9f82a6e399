from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import PositiveInt

from distill.errors import DistillError
from distill.hashing import file_sha256
from distill.output.files import shown_path
from distill.record import Origin
from distill.sources.base import SOURCES, FileSource, Parsed, Shard, SourceParams
from distill.sources.columnar import import_columnar, parse_batches


class ParquetParams(SourceParams):
    path: str
    batch_rows: PositiveInt = 4096


@SOURCES.register("parquet")
class ParquetSource(FileSource):
    """Parquet files (a file, a directory searched recursively, or a glob), read in sorted file order and streamed
    in record batches (pyarrow), so a file larger than memory is never loaded whole.

    Rows are numbered from 0 within each file: `origin = {path: <file relative to the source root>, row}`, and a
    row without an id is `<relative file>#<row>`. A file that is not Parquet fails the run before any row is read.
    """

    kind = "parquet"
    Params = ParquetParams
    params: ParquetParams
    suffixes = (".parquet",)

    def check(self) -> None:
        self.parquet = import_columnar("pyarrow.parquet", "source.kind")
        super().check()
        for path in self.files:
            self._open(path).close()

    def _open(self, path: Path) -> Any:
        try:
            return self.parquet.ParquetFile(path)
        except (OSError, ValueError) as error:
            raise DistillError(f"source.path: {shown_path(path)} is not a readable Parquet file ({error})") from None

    def shards(self, target_bytes: int) -> list[Shard]:
        """One shard per file (rows are numbered per file, so a file is read whole), hashed once here."""
        return [
            Shard(shard.index, shard.path, shard.relative, size=shard.size, sha256=file_sha256(shard.path))
            for shard in super().shards(target_bytes)
        ]

    def read_shard(self, shard: Shard) -> Iterator[Parsed]:
        if shard.path is None:
            return self.read()
        # A worker builds its own source: it needs pyarrow, not the driver's check of every file.
        self.parquet = import_columnar("pyarrow.parquet", "source.kind")
        self._inputs = []
        return self.read_file(Path(shard.path), shard.relative or Path(shard.path).name, shard.sha256)

    def read_file(self, path: Path, relative: str, sha256: str | None = None) -> Iterator[Parsed]:
        """One file's rows; appends its entry to the inputs once read."""
        rows = 0
        with self._open(path) as handle:
            batches = handle.iter_batches(batch_size=self.params.batch_rows)
            for parsed in parse_batches(
                self, batches, lambda row: Origin(path=relative, row=row), lambda row: f"{relative}#{row}"
            ):
                rows += 1
                yield parsed
        self._inputs.append({"path": shown_path(path.resolve()), "sha256": sha256 or file_sha256(path), "rows": rows})

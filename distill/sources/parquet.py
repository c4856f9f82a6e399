from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import PositiveInt

from distill.errors import DistillError
from distill.hashing import file_sha256
from distill.record import Origin
from distill.sources.base import SOURCES, Parsed, Shard, Source, SourceParams
from distill.sources.columnar import import_columnar, parse_batches
from distill.output.files import shown_path
from distill.sources.jsonl import InputPath, relative_name, resolve_files



class ParquetParams(SourceParams):
    path: InputPath
    batch_rows: PositiveInt = 4096


@SOURCES.register("parquet")
class ParquetSource(Source):
    """Parquet files (a file, a directory searched recursively, or a glob), read in sorted file order and streamed
    in record batches (pyarrow), so a file larger than memory is never loaded whole.

    Rows are numbered from 0 within each file: `origin = {path: <file relative to the source root>, row}`, and a
    row without an id is `<relative file>#<row>`. A file that is not Parquet fails the run before any row is read.
    """

    kind = "parquet"
    Params = ParquetParams
    params: ParquetParams


    def check(self) -> None:
        self.parquet = import_columnar("pyarrow.parquet", "source.kind")
        self.root, self.files = resolve_files(self.params.path, "source.path", (".parquet",))
        for path in self.files:
            self._open(path).close()

    def _open(self, path: Path) -> Any:
        try:
            return self.parquet.ParquetFile(path)
        except (OSError, ValueError) as error:
            raise DistillError(f"source.path: {path} is not a readable Parquet file ({error})") from None

    def read(self) -> Iterator[Parsed]:
        self.check()
        inputs = []
        for path in self.files:
            yield from self._read_file(path)
            inputs.extend(self._inputs)
        self._inputs = inputs

    def shards(self, target_bytes: int) -> list[Shard]:
        """One shard per file (rows are numbered per file, so a file is read whole)."""
        self.check()
        return [
            Shard(
                index, str(path), relative_name(path, self.root), size=path.stat().st_size,
                sha256=file_sha256(path),
            )
            for index, path in enumerate(self.files)
        ]

    def read_shard(self, shard: Shard) -> Iterator[Parsed]:
        if shard.path is None:
            return self.read()
        self.parquet = import_columnar("pyarrow.parquet", "source.kind")
        return self._read_file(Path(shard.path), shard.sha256)

    def _read_file(self, path: Path, sha256: str | None = None) -> Iterator[Parsed]:
        relative = relative_name(path, self.root)
        rows = 0
        with self._open(path) as handle:
            batches = handle.iter_batches(batch_size=self.params.batch_rows)
            for parsed in parse_batches(
                self, batches, lambda row: Origin(path=relative, row=row), lambda row: f"{relative}#{row}"
            ):
                rows += 1
                yield parsed
        self._inputs = [{"path": shown_path(path.resolve()), "sha256": sha256 or file_sha256(path), "rows": rows}]

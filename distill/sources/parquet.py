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
from distill.sources.columnar import consecutive_runs, import_columnar, parse_batches


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

    def shards(self, target_bytes: int, multiple: int = 1) -> list[Shard]:
        """Each file cut into runs of consecutive row groups of about `target_bytes` (uncompressed), each knowing
        its first row's number, so origins and `<file>#<row>` ids are those of a whole-file read; hashed once here."""
        shards: list[Shard] = []
        for whole in super().shards(target_bytes):
            path = Path(whole.path)
            digest = file_sha256(path)
            with self._open(path) as handle:
                metadata = handle.metadata
                groups = [
                    (metadata.row_group(i).num_rows, metadata.row_group(i).total_byte_size)
                    for i in range(metadata.num_row_groups)
                ]
            if not groups:
                shards.append(Shard(len(shards), whole.path, whole.relative, size=whole.size, sha256=digest))
                continue
            for first, end, first_row, size in consecutive_runs(groups, target_bytes):
                shards.append(Shard(
                    len(shards), whole.path, whole.relative, size=size, sha256=digest,
                    row_groups=(first, end), first_row=first_row,
                ))
        return shards

    def read_shard(self, shard: Shard) -> Iterator[Parsed]:
        if shard.path is None:
            return self.read()
        # A worker builds its own source: it needs pyarrow, not the driver's check of every file.
        self.parquet = import_columnar("pyarrow.parquet", "source.kind")
        self._inputs = []
        return self.read_file(
            Path(shard.path), shard.relative or Path(shard.path).name, shard.sha256, shard.row_groups, shard.first_row
        )

    def read_file(
        self, path: Path, relative: str, sha256: str | None = None, row_groups: tuple[int, int] | None = None,
        first_row: int = 0,
    ) -> Iterator[Parsed]:
        """One file's rows (or those of a run of its row groups); appends its entry to the inputs once read (the
        plan adds up the rows of a file's runs)."""
        rows = 0
        with self._open(path) as handle:
            chosen = list(range(*row_groups)) if row_groups is not None else None
            batches = handle.iter_batches(batch_size=self.params.batch_rows, row_groups=chosen)
            for parsed in parse_batches(
                self, batches, lambda row: Origin(path=relative, row=row), lambda row: f"{relative}#{row}", first_row
            ):
                rows += 1
                yield parsed
        self._inputs.append({"path": shown_path(path.resolve()), "sha256": sha256 or file_sha256(path), "rows": rows})


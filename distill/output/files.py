"""Output files: JSONL with sorted keys (or Parquet with a schema-derived layout), written atomically (a temporary
name unique to this process, then a rename), hashed as written. A file with its final name is always whole."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

JSON_OPTIONS = orjson.OPT_SORT_KEYS
PARQUET_ROW_GROUP_ROWS = 65_536


def jsonl_bytes(row: Any) -> bytes:
    return orjson.dumps(row, option=JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary handle on a temporary file that becomes `path` only when the block ends without an error."""
    temporary = temporary_name(path)
    try:
        with temporary.open("wb") as handle:
            yield handle
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_jsonl(path: Path, rows: Iterable[Any]) -> dict[str, Any]:
    """Writes one JSON object per line (a row given as bytes is an already encoded line); returns {path, sha256,
    rows} for the manifest."""
    digest = hashlib.sha256()
    count = 0
    with atomic_file(path) as handle:
        for row in rows:
            data = row if isinstance(row, bytes) else jsonl_bytes(row)
            digest.update(data)
            handle.write(data)
            count += 1
    return {"path": path.name, "sha256": digest.hexdigest(), "rows": count}


def write_bytes(path: Path, data: bytes) -> dict[str, Any]:
    with atomic_file(path) as handle:
        handle.write(data)
    return {"path": path.name, "sha256": hashlib.sha256(data).hexdigest()}


def write_json(path: Path, value: Any) -> dict[str, Any]:
    return write_bytes(path, orjson.dumps(value, option=JSON_OPTIONS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def write_text(path: Path, text: str) -> dict[str, Any]:
    return write_bytes(path, text.encode("utf-8"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_parquet(path: Path, lines: Iterable[dict[str, Any]], schema_name: str) -> dict[str, Any]:
    """Writes the lines as Parquet rows, in order, in row groups of `PARQUET_ROW_GROUP_ROWS`, with the Arrow schema
    derived from JSON Schema `schema_name` (see `distill.output.parquet_schema`); returns {path, sha256, rows}.
    Same lines, same bytes; never more than one row group in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.output.parquet_schema import table_layout
    from distill.validation import load_schema

    layout = table_layout(load_schema(schema_name), schema_name, pa)
    count = 0
    with atomic_file(path) as handle:
        with pq.ParquetWriter(handle, layout.arrow_schema, compression="zstd") as writer:
            group: list[dict[str, Any]] = []
            for line in lines:
                group.append(layout.row(line))
                if len(group) == PARQUET_ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_pylist(group, schema=layout.arrow_schema))
                    count += len(group)
                    group = []
            if group or count == 0:
                writer.write_table(pa.Table.from_pylist(group, schema=layout.arrow_schema))
                count += len(group)
    return {"path": path.name, "sha256": file_sha256(path), "rows": count}

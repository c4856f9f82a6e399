"""Output files: JSONL with sorted keys (or Parquet with a schema-derived layout), written atomically (temp file,
then rename), hashed as written."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

JSON_OPTIONS = orjson.OPT_SORT_KEYS


def jsonl_bytes(row: Any) -> bytes:
    return orjson.dumps(row, option=JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def write_jsonl(path: Path, rows: Iterable[Any]) -> dict[str, Any]:
    """Writes one JSON object per line; returns {path, sha256, rows} for the manifest."""
    digest = hashlib.sha256()
    count = 0
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        for row in rows:
            data = jsonl_bytes(row)
            digest.update(data)
            handle.write(data)
            count += 1
    os.replace(temporary, path)
    return {"path": path.name, "sha256": digest.hexdigest(), "rows": count}


def write_json(path: Path, value: Any) -> dict[str, Any]:
    data = orjson.dumps(value, option=JSON_OPTIONS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return {"path": path.name, "sha256": hashlib.sha256(data).hexdigest()}


PARQUET_ROW_GROUP_ROWS = 65_536


def write_parquet(path: Path, lines: Sequence[dict[str, Any]], schema_name: str) -> dict[str, Any]:
    """Writes the lines as Parquet rows, in order, with the Arrow schema derived from JSON Schema `schema_name`
    (see `distill.output.parquet_schema`); returns {path, sha256, rows}. Same lines, same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.output.parquet_schema import table_layout
    from distill.validation import load_schema

    layout = table_layout(load_schema(schema_name), schema_name, pa)
    table = pa.Table.from_pylist([layout.row(line) for line in lines], schema=layout.arrow_schema)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary, row_group_size=PARQUET_ROW_GROUP_ROWS, compression="zstd")
    os.replace(temporary, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": path.name, "sha256": digest, "rows": table.num_rows}


def write_dataset(path: Path, lines: Sequence[dict[str, Any]], output_format: str, schema_name: str) -> dict[str, Any]:
    """A task's dataset file in the configured `output.format`."""
    if output_format == "parquet":
        return write_parquet(path, lines, schema_name)
    return write_jsonl(path, lines)


def write_text(path: Path, text: str) -> dict[str, Any]:
    """A small text file written beside the data (a config block to paste); {path, sha256} for the manifest."""
    data = text.encode("utf-8")
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return {"path": path.name, "sha256": hashlib.sha256(data).hexdigest()}

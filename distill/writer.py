"""Output files: JSONL with sorted keys, written atomically (temp file, then rename), hashed as written."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
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

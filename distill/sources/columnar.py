"""What the columnar sources (Lance, Parquet) share: the optional Arrow import and Arrow rows -> records."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from importlib import import_module
from types import ModuleType
from typing import Any

from distill.errors import DistillError
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin
from distill.sources.base import Parsed, Source

COLUMNAR_EXTRA = "pip install 'distill[columnar]'"
_NOT_JSON_TYPES = ("is_binary", "is_large_binary", "is_fixed_size_binary", "is_decimal", "is_duration")


def import_columnar(module: str, key: str) -> ModuleType:
    """`pyarrow.parquet` or `lance`, or a one-line error naming the config key and the extra to install."""
    try:
        return import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise DistillError(f"{key}: reading this needs the `{package}` package ({COLUMNAR_EXTRA})") from None


def json_safe(value: Any) -> Any:
    """Arrow values orjson cannot write (binary, decimal, duration) as JSON-ready ones, so any row can be
    quarantined or kept in metadata. Timestamps stay datetimes: the record model parses them."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _needs_json_safe(arrow_type: Any) -> bool:
    """Whether values of this Arrow type (or nested inside it) come out as something orjson cannot write."""
    import pyarrow as pa

    if any(getattr(pa.types, check)(arrow_type) for check in _NOT_JSON_TYPES):
        return True
    return any(_needs_json_safe(arrow_type.field(i).type) for i in range(arrow_type.num_fields))


def parse_batches(
    source: Source, batches: Iterable[Any], origin_of: Callable[[int], Origin], fallback_id_of: Callable[[int], str],
    first_row: int = 0,
) -> Iterator[Parsed]:
    """Every row of the Arrow record batches, in order, as a Record or a quarantine row. Rows are numbered from
    `first_row` (0: the batches start the file)."""
    row_number = first_row
    for batch in batches:
        clean = any(_needs_json_safe(field.type) for field in batch.schema)
        rows = python_rows(batch)
        if rows is not None:
            for row in rows:
                row = json_safe(row) if clean else row
                yield source.to_record(row, origin_of(row_number), fallback_id_of(row_number))
                row_number += 1
            continue
        for row, problems in rows_one_by_one(batch):
            origin, row_id = origin_of(row_number), fallback_id_of(row_number)
            if problems:
                yield QuarantineRow("parse", Reason.schema_violation, problems, row_id, origin, json_safe(row))
            else:
                yield source.to_record(json_safe(row), origin, row_id)
            row_number += 1


def python_rows(batch: Any) -> list[dict[str, Any]] | None:
    """The batch's rows as Python values, or None when a value has none (a timestamp or date outside years
    1-9999): then `rows_one_by_one` tells those rows apart."""
    try:
        return batch.to_pylist()
    except (OverflowError, ValueError):
        return None


def rows_one_by_one(batch: Any) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
    """Each row of the batch with the problems of its values Python cannot hold; such a value is given as Arrow's
    own text of it (None when Arrow has none), so the row can still be quarantined whole."""
    import pyarrow as pa

    for index in range(batch.num_rows):
        row, problems = {}, []
        for name, column in zip(batch.schema.names, batch.columns):
            value = column[index]
            try:
                row[name] = value.as_py()
            except (OverflowError, ValueError) as error:
                problems.append(f"{name}: {error}")
                try:
                    row[name] = value.cast(pa.string()).as_py()
                except (pa.ArrowException, ValueError):
                    row[name] = None
        yield row, tuple(problems)


def consecutive_runs(pieces: Sequence[tuple[int, float]], target_bytes: int) -> list[tuple[int, int, int, int]]:
    """[(first piece, end piece, first row, bytes)]: consecutive pieces of a columnar input ((rows, bytes) each: a
    Parquet file's row groups, a Lance dataset's fragments) gathered until a run holds about `target_bytes`."""
    runs = []
    first, first_row, size, rows = 0, 0, 0.0, 0
    for index, (piece_rows, piece_bytes) in enumerate(pieces):
        size += piece_bytes
        rows += piece_rows
        if size >= target_bytes or index == len(pieces) - 1:
            runs.append((first, index + 1, first_row, int(size)))
            first, first_row, size, rows = index + 1, first_row + rows, 0.0, 0
    return runs

"""The Arrow schema of a task's Parquet files, derived from its JSON Schema in `schemas/`, never from the data.

So every file of a task has the same columns and types, whichever rows it holds (a batch without `reward` still has
the column), and files of different runs concatenate. Mapping: string/integer/number/boolean -> utf8/int64/
float64/bool; an array -> a list of its items; a closed object (`additionalProperties: false`) -> a struct of its
properties in sorted order; anything open or mixed (free-form objects, unions) -> utf8 holding canonical JSON,
marked with the field metadata `distill.encoding: json` so a reader knows to decode it. Every field is nullable:
a key a line leaves out is null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

JSON_ENCODING = {b"distill.encoding": b"json"}
_SCALARS = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool_"}


@dataclass(frozen=True)
class Column:
    """One (possibly nested) column: its Arrow type and how to turn a JSON value into that type's value."""

    kind: str  # "scalar" | "integer" | "list" | "struct" | "json"
    arrow_type: Any
    children: tuple[tuple[str, Column], ...] = ()

    def encode(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "json":
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")
        if self.kind == "list":
            item = self.children[0][1]
            return [item.encode(v) for v in value]
        if self.kind == "struct":
            return {name: column.encode(value.get(name)) for name, column in self.children}
        if isinstance(value, float) and self.kind == "integer":
            return int(value)  # JSON Schema's integer admits 2.0; Arrow's int64 does not
        return value


def _json_types(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type")
    if declared is not None:
        types = {declared} if isinstance(declared, str) else set(declared)
    else:
        values = schema.get("enum", [schema["const"]] if "const" in schema else [])
        types = {_value_type(v) for v in values} or {"any"}
    types.discard("null")
    if types == {"integer", "number"}:
        return {"number"}
    return types


def _value_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "any"


def column_for(schema: Any, pa: Any) -> Column:
    if not isinstance(schema, dict) or any(key in schema for key in ("anyOf", "oneOf", "allOf", "$ref")):
        return Column("json", pa.string())
    types = _json_types(schema)
    if len(types) != 1:
        return Column("json", pa.string())
    (json_type,) = types
    if json_type in _SCALARS:
        return Column("integer" if json_type == "integer" else "scalar", getattr(pa, _SCALARS[json_type])())
    if json_type == "array" and isinstance(schema.get("items"), dict):
        item = column_for(schema["items"], pa)
        return Column("list", pa.list_(_field("item", item, pa)), (("item", item),))
    if json_type == "object" and schema.get("additionalProperties") is False and schema.get("properties"):
        children = tuple((name, column_for(sub, pa)) for name, sub in sorted(schema["properties"].items()))
        return Column("struct", pa.struct([_field(name, column, pa) for name, column in children]), children)
    return Column("json", pa.string())


def _field(name: str, column: Column, pa: Any) -> Any:
    return pa.field(name, column.arrow_type, nullable=True, metadata=JSON_ENCODING if column.kind == "json" else None)


EXTRA_COLUMN = "_extra"


@dataclass(frozen=True)
class Layout:
    """A task's Parquet table: the Arrow schema and how one line becomes one row."""

    arrow_schema: Any
    columns: tuple[tuple[str, Column], ...]
    open_top_level: bool

    def row(self, line: dict[str, Any]) -> dict[str, Any]:
        row = {name: column.encode(line.get(name)) for name, column in self.columns}
        if self.open_top_level:
            # Keys an open line schema allows but does not declare are kept, as JSON, rather than lost.
            declared = {name for name, _ in self.columns}
            extra = {key: value for key, value in line.items() if key not in declared}
            row[EXTRA_COLUMN] = Column("json", None).encode(extra) if extra else None
        return row


def table_layout(schema: dict[str, Any], schema_name: str, pa: Any) -> Layout:
    """The Parquet layout for lines of the JSON Schema `schema_name`: one column per top-level property, sorted."""
    properties = schema.get("properties") or {}
    columns = tuple((name, column_for(sub, pa)) for name, sub in sorted(properties.items()))
    fields = [_field(name, column, pa) for name, column in columns]
    open_top_level = schema.get("additionalProperties") is not False
    if open_top_level:
        fields.append(pa.field(EXTRA_COLUMN, pa.string(), nullable=True, metadata=JSON_ENCODING))
    arrow_schema = pa.schema(fields, metadata={b"distill.schema": schema_name.encode("utf-8")})
    return Layout(arrow_schema, columns, open_top_level)

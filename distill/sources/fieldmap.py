"""The declarative field map: how a source's own column names become record fields, without code."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from distill.record import RECORD_FIELDS


class FieldRule(BaseModel):
    """`path` is a dotted key into the input row; `decode: json` parses the first JSON-encoded text met along it:
    the value itself (`{path: metadata, decode: json}`) or the column the path reads into
    (`{path: metadata.category, decode: json}` takes `category` out of a JSON-text `metadata` column)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    decode: Literal["json"] | None = None


FieldSpec = str | FieldRule

# The source sets `origin`; an input column of that name is the user's data and lands in metadata.
_MAPPABLE = tuple(name for name in RECORD_FIELDS if name != "origin")


def _decoded(value: Any, name: str, path: str) -> Any:
    if not isinstance(value, (str, bytes)):
        return value
    try:
        return orjson.loads(value) if value else None
    except orjson.JSONDecodeError as error:
        raise ValueError(f"{name}: column {path!r} is not valid JSON ({error})") from None


def _lookup(row: dict[str, Any], name: str, rule: FieldRule) -> tuple[bool, Any]:
    value: Any = row
    parts = rule.path.split(".")
    pending_decode = rule.decode == "json"
    for depth, part in enumerate(parts):
        if pending_decode and depth and isinstance(value, (str, bytes)):
            value, pending_decode = _decoded(value, name, ".".join(parts[:depth])), False
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, _decoded(value, name, rule.path) if pending_decode else value


class FieldMap:
    """record field -> rule. Fields not named map from the input key of the same name. Top-level input keys that
    feed no field whole are kept under `metadata` (without overwriting it), so nothing a log carries is silently
    lost: a column only partly read through a dotted path (`tokens_used: state_metadata.tokens_used`) keeps its
    other keys there too.

    A map edit cannot switch a check off: when a field is read from elsewhere (`category: verdict`) and a row lacks
    that path but carries a key named after the field (`"category": "rejected"`), the row is refused (ValueError ->
    `schema_violation`) instead of going on without a category, unless the field is in `allow_unmapped`."""

    def __init__(self, fields: dict[str, FieldSpec], allow_unmapped: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(fields) - set(_MAPPABLE))
        if unknown:
            raise ValueError(f"unknown record field(s) {unknown} (known: {', '.join(_MAPPABLE)})")
        self.rules: dict[str, FieldRule] = {
            name: FieldRule(path=spec) if isinstance(spec, str) else spec for name, spec in fields.items()
        }
        for name in _MAPPABLE:
            self.rules.setdefault(name, FieldRule(path=name))
        self.identity = all(rule.path == name and rule.decode is None for name, rule in self.rules.items())
        self._consumed_roots = {rule.path for rule in self.rules.values() if "." not in rule.path}
        # Most rules read one column as it is: a dict lookup, without walking a path.
        self._plain = [(n, r.path) for n, r in self.rules.items() if "." not in r.path and r.decode is None]
        self._walked = [(n, r) for n, r in self.rules.items() if "." in r.path or r.decode is not None]
        self._moved = [(n, r.path) for n, r in self.rules.items() if r.path != n and n not in allow_unmapped]

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        consumed = self._consumed_roots
        if self.identity:
            # The default map: one pass over the row's own keys instead of one lookup per record field.
            fields = {key: value for key, value in row.items() if key in consumed}
            if len(fields) == len(row):
                return fields
        else:
            fields = {name: row[path] for name, path in self._plain if path in row}
            for name, rule in self._walked:
                found, value = _lookup(row, name, rule)
                if found:
                    fields[name] = value
            for name, path in self._moved:
                if name not in fields and row.get(name) is not None:
                    raise ValueError(
                        f"{name}: the row has a {name!r} key, but source.fields reads {name} from {path!r}, which "
                        f"the row lacks (source.allow_unmapped=[{name}] accepts such rows without a {name})"
                    )
        leftovers = {key: value for key, value in row.items() if key not in consumed}
        if leftovers:
            metadata = fields.get("metadata")
            if metadata is None:
                fields["metadata"] = leftovers
            elif isinstance(metadata, dict):
                fields["metadata"] = {**leftovers, **metadata}
        return fields

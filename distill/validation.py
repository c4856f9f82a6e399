"""The JSON Schemas in `schemas/` (shipped as `distill.schemas`), compiled once for write-time checks."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Callable

import fastjsonschema
import jsonschema_rs

SCHEMA_PACKAGE = "distill.schemas"


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files(SCHEMA_PACKAGE).joinpath(f"{name}.schema.json").read_text("utf-8"))


@cache
def compiled(name: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(load_schema(name))


@cache
def checker(name: str) -> Any:
    return jsonschema_rs.validator_for(load_schema(name))


def schema_errors(name: str, value: Any) -> list[str]:
    """[] when `value` satisfies schema `name`, else the validator's message. jsonschema-rs decides whether a value
    is valid (an SFT line in ~1.7 µs, against ~10 for fastjsonschema's generated code, which raises and catches an
    exception for every message before the first assistant one to check `contains`); fastjsonschema words the
    message of what it refuses, as it always has (and has the last word on a value jsonschema-rs refuses)."""
    try:
        if checker(name).is_valid(value):
            return []
    except (TypeError, ValueError, OverflowError):
        pass  # a value jsonschema-rs cannot read as JSON (text that is not UTF-8, an integer beyond 64 bits)
    try:
        compiled(name)(value)
    except fastjsonschema.JsonSchemaValueException as error:
        return [error.message]
    return []

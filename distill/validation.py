"""The JSON Schemas in `schemas/` (shipped as `distill.schemas`), compiled once for write-time checks."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Callable

import fastjsonschema

SCHEMA_PACKAGE = "distill.schemas"


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files(SCHEMA_PACKAGE).joinpath(f"{name}.schema.json").read_text("utf-8"))


@cache
def compiled(name: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(load_schema(name))


def schema_errors(name: str, value: Any) -> list[str]:
    """[] when `value` satisfies schema `name`, else the validator's message."""
    try:
        compiled(name)(value)
    except fastjsonschema.JsonSchemaValueException as error:
        return [error.message]
    return []

"""Coverage instances: the unit-level facts (weights, which units are current truth, invalidations, stale) that the
candidate records do not carry, read from the instance file named by `task.instances`, and the kind/state rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError, model_validator

UnitId = Annotated[str, Field(min_length=1)]
"""Any non-empty name (unit ids, representation types)."""

CURRENT_TRUTH, INVALIDATION, STALE = "current_truth", "invalidation", "stale_or_superseded"
CONTEXT, ABSTENTION, SYNTHETIC = "context", "abstention", "synthetic_evidence"
STATE_OF_KIND = {INVALIDATION: "invalidates_prior", STALE: "superseded", ABSTENTION: "missing_evidence"}
CURRENT_STATE = "current"


class InstanceSpec(BaseModel):
    """One instance: what the records of its group are evaluated against. Every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_id: UnitId | None = None
    seed: int = 0
    distribution: str | None = None
    unit_weights: dict[UnitId, NonNegativeFloat] = {}
    current_unit_ids: list[UnitId] = []
    invalidation_unit_ids: list[UnitId] = []
    stale_unit_ids: list[UnitId] = []
    unit_texts: dict[UnitId, str] = {}
    unit_questions: dict[UnitId, str] = {}

    @model_validator(mode="after")
    def _one_kind_per_unit(self) -> InstanceSpec:
        seen: dict[str, str] = {}
        for kind, units in self.listed_kinds().items():
            for unit in units:
                if seen.setdefault(unit, kind) != kind:
                    raise ValueError(f"unit {unit!r} is listed as both {seen[unit]} and {kind}")
        return self

    def listed_kinds(self) -> dict[str, list[str]]:
        return {
            CURRENT_TRUTH: self.current_unit_ids,
            INVALIDATION: self.invalidation_unit_ids,
            STALE: self.stale_unit_ids,
        }

    def named_units(self) -> set[str]:
        return set(self.unit_weights).union(*self.listed_kinds().values())

    def kind_of(self, unit_id: str) -> str:
        """The instance's lists first, then the unit id's conventions (see `kind_from_id`)."""
        for kind, units in self.listed_kinds().items():
            if unit_id in units:
                return kind
        return kind_from_id(unit_id)


class InstanceFile(BaseModel):
    """`{"schema_version": 1, "instances": {<group key>: InstanceSpec}}`: the group key chooses the instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    instances: dict[str, InstanceSpec] = {}


def kind_from_id(unit_id: str) -> str:
    """The kind a unit id's conventions give it, matched case-insensitively (as the seed exporter does, which
    lower-cases the id before testing): `Stale:tier:silver` is stale_or_superseded."""
    unit_id = unit_id.lower()
    if unit_id.startswith("current:") or ":current:" in unit_id:
        return CURRENT_TRUTH
    if unit_id.startswith("invalid:") or ":invalidates:" in unit_id:
        return INVALIDATION
    if unit_id.startswith("stale:"):
        return STALE
    if unit_id.startswith("context:") or ":context:" in unit_id:
        return CONTEXT
    if "abstain" in unit_id:
        return ABSTENTION
    return SYNTHETIC


def state_of(kind: str) -> str:
    return STATE_OF_KIND.get(kind, CURRENT_STATE)


def proposition_id(unit_id: str) -> str:
    """The unit id before its last `:` (the proposition several units may state), or the id itself."""
    head, separator, _ = unit_id.rpartition(":")
    return head if separator and head else unit_id


def load_instance_file(path: str) -> InstanceFile:
    """Reads and validates the instance file; a ValueError says what is wrong, with the key inside the file."""
    try:
        data = orjson.loads(Path(path).expanduser().read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except orjson.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON ({error})") from None
    try:
        return InstanceFile.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(file)"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise ValueError(f"{path}: {where}: {first['msg']}{more}") from None

"""The curation step protocol.

A step sees batches of records (never one record per call) and, for each record, keeps it (possibly transformed) or
drops it with a `Drop`. Two shapes:

* `RecordStep`: a pure function of one batch (`map_batch`), so it runs unchanged as a map-over-batches on any engine.
* `GlobalStep`: needs all records to decide (dedup, decontamination). It is split in three visible phases:
  `keys` (per batch: compact keys such as hashes or signatures, never whole records), `decide` (over the keys
  only: which record ids go, and why) and `filter` (per batch: apply the decisions). A distributed engine maps
  `keys`, gathers/joins for `decide`, and maps `filter`; the embedded executor does the same in one process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.registry import Registry

Verdict = Record | Drop
K = TypeVar("K")


class StepParams(BaseModel):
    """Parameters every step accepts; each step extends this with its own (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str | None = None


@dataclass(frozen=True)
class StepContext:
    """What a step may know about the run beyond its own parameters."""

    group_key: Callable[[Record], str]


class Step(ABC):
    kind: ClassVar[str]
    Params: ClassVar[type[StepParams]] = StepParams
    reasons: ClassVar[tuple[Reason, ...]] = ()

    def __init__(self, name: str, params: StepParams, context: StepContext) -> None:
        self.name = name
        self.params = params
        self.context = context

    def manifest_extra(self) -> dict[str, Any]:
        """Step-specific figures for the manifest's stage entry (e.g. hits per eval set)."""
        return {}


class RecordStep(Step):
    @abstractmethod
    def map_batch(self, batch: Sequence[Record]) -> list[Verdict]:
        """One verdict per record, in batch order."""


class GlobalStep(Step, Generic[K]):
    @abstractmethod
    def keys(self, batch: Sequence[Record]) -> K:
        """Compact keys for one batch."""

    @abstractmethod
    def decide(self, keys: Sequence[K]) -> dict[str, Drop]:
        """From the keys of every batch (in record order): the ids of the records to drop, with why."""

    def filter(self, batch: Sequence[Record], drops: dict[str, Drop]) -> list[Verdict]:
        return [drops.get(record.id, record) for record in batch]


STEPS: Registry[type[Step]] = Registry("curation step")

"""The curation step protocol.

A step sees batches of records (never one record per call) and, for each record, keeps it (possibly transformed) or
drops it with a `Drop`. Two shapes:

* `RecordStep`: a pure function of one batch (`map_batch`), so it runs unchanged as a map-over-batches on any engine.
* `GlobalStep`: needs all records to decide (dedup, decontamination). It is split in three visible phases:
  `keys` (per batch: compact keys such as hashes or signatures, never whole records), `decide` (over the keys
  only: which record ids go, and why) and `filter` (per batch: apply the decisions). A distributed engine maps
  `keys`, gathers/joins for `decide`, and maps `filter`; the plan (`distill.plan`) does exactly that.

Steps keep no state of their own while mapping, since a map runs in many worker processes: loading (eval sets,
detectors) goes in `setup()`, run once per worker; figures for the manifest go into `self.counters`, which the
executor gives each map task fresh and merges across workers before `manifest_extra` reads them.

A key batch is a dataclass of parallel columns with an `ids` list (one entry per keyed record); every other
column is a list or array of the same length, or empty when the step does not use it. That is what lets the plan
gather the keys of many shards, drop the entries of records already dropped, and order them by (created_at, id)
without knowing the step (`take_keys`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
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

    def group_keys(self, records: Sequence[Record]) -> list[str]:
        """Each record's group key, equal keys as one str object: a conversation's records, which a batch mostly
        holds together, then share it, so a key spill pickles it once (pickle's memo) and the decide holds it once
        instead of once per record. At 1e6 bench records (265 keys in a batch of 1,024), the decide's load of the
        exact_dedup keys took 0.17 s instead of 0.22-0.34 in a fresh process, and its `decide` 0.24 instead of
        0.29-0.32 (bench/RESULTS.md)."""
        shared: dict[str, str] = {}
        return [shared.setdefault(key, key) for key in map(self.group_key, records)]


class Step(ABC):
    kind: ClassVar[str]
    Params: ClassVar[type[StepParams]] = StepParams
    reasons: ClassVar[tuple[Reason, ...]] = ()

    def __init__(self, name: str, params: StepParams, context: StepContext) -> None:
        self.name = name
        self.params = params
        self.context = context
        self.counters: Counter[str] = Counter()
        self.figures: dict[str, Any] = {}
        """What `setup()` and `decide` found, for the manifest; the executor carries it back from wherever
        `decide` ran."""

    def setup(self) -> None:
        """Loads what the step needs (eval sets, detectors), once per worker process, before its first batch."""

    def manifest_extra(self) -> dict[str, Any]:
        """Step-specific figures for the manifest's stage entry (e.g. hits per eval set), from `self.counters`
        (merged across workers) and what `decide` found."""
        return {}

    def redact_quarantine_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A quarantine row (as JSON) as the quarantine may show it: a step that hides something from the dataset
        (secrets) hides it here too. The default shows the row as it is."""
        return row


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


def take_keys(keys: Any, positions: Sequence[int] | np.ndarray) -> Any:
    """The key batch holding only the entries at `positions`, in that order (see the module docstring)."""
    count = len(keys.ids)
    picked: dict[str, Any] = {}
    index = np.asarray(positions, dtype=np.int64)
    for column in fields(keys):
        values = getattr(keys, column.name)
        if len(values) != count or count == 0:
            picked[column.name] = values[:0] if len(values) == count else values
        elif isinstance(values, np.ndarray):
            picked[column.name] = values[index]
        else:
            picked[column.name] = [values[i] for i in index.tolist()]
    return replace(keys, **picked)


def concat_keys(batches: Sequence[Any]) -> Any:
    """One key batch from several of the same step (columns concatenated in order)."""
    first = batches[0]
    joined: dict[str, Any] = {}
    for column in fields(first):
        parts = [getattr(batch, column.name) for batch in batches]
        if isinstance(parts[0], np.ndarray):
            shaped = [part for part in parts if len(part)] or parts[:1]
            joined[column.name] = np.concatenate(shaped) if len(shaped) > 1 else shaped[0]
        else:
            joined[column.name] = [value for part in parts for value in part]
    return replace(first, **joined)


STEPS: Registry[type[Step]] = Registry("curation step")

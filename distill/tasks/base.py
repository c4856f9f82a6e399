"""Export tasks: turn groups of curated records into training examples, behind the task's own firewall."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict

from distill.grouping import Group
from distill.hashing import canonical_content_id, canonical_json
from distill.quarantine import Drop
from distill.record import Record, format_timestamp, order_micros
from distill.registry import Registry
from distill.tokens import Tokenizer

FIREWALL_STEP = "firewall"
TASK_STEP = "task"
UNDATED_FIRST = float("-inf")
"""The sort key's first value for a line built from no record: before every line that has one, as `()` sorted
before any (created_at, id)."""


class TaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    require_category: bool = False


@dataclass(frozen=True)
class Example:
    """One output line (with its content-hash `id`) and the records it was built from, in order."""

    line: dict[str, Any]
    records: tuple[Record, ...]
    group_key: str
    jsonl: bytes | None = None
    """The line as a JSONL file holds it (sorted keys, newline), spelt out by `make_example` from the bytes its id
    was hashed over; None: encoded where it is written."""

    @property
    def id(self) -> str:
        return self.line["id"]

    def sort_key(self) -> tuple[Any, ...]:
        """Where the line goes in its file: by its first record's (created_at, id), then its own id. Flat and of
        plain values (`order_micros`, not a datetime): a reduce pickles one key per line into its spills and the
        merge unpickles and compares them, and a tz-aware datetime costs ~0.6 µs more a line to unpickle alone."""
        if not self.records:
            return (UNDATED_FIRST, "", self.id)
        first = self.records[0]
        return (order_micros(first.created_at), first.id, self.id)


@dataclass
class TaskOutput:
    examples: list[Example] = field(default_factory=list)
    drops: list[tuple[str, Record, Drop]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    """Task-level figures for the manifest's `task_counts` (e.g. insufficient_pair_groups)."""

    def drop(self, step: str, records: Sequence[Record], drop: Drop) -> None:
        self.drops.extend((step, record, drop) for record in records)


class Task(ABC):
    kind: ClassVar[str]
    Params: ClassVar[type[TaskParams]] = TaskParams
    schema: ClassVar[str]
    """Name of the JSON Schema in `schemas/` every output line is validated against at write time."""
    writer: ClassVar[str] = "lines"
    """The dataset writer (`distill.output.writers`): one line per example, or a task's own file layout."""
    tokenizer: Tokenizer | None = None
    """The run's tokenizer, set by the config for a task with `max_tokens` (None: the length proxy)."""

    def __init__(self, params: TaskParams) -> None:
        self.params = params

    @property
    def form(self) -> str | None:
        """The task's output form when it has several (preference: paired, unpaired, ranked), for stats.json."""
        return None

    @property
    def output_name(self) -> str:
        return self.kind

    @abstractmethod
    def build(self, groups: Sequence[Group]) -> TaskOutput:
        """Examples from the groups of one split side; every record of those groups ends in an example or a drop."""


# Record fields a line's provenance names when one of its records has them (the first such record's value).
PROVENANCE_FIELDS = ("session_id", "run_id", "tenant", "source", "bot_id")


def make_example(prefix: str, body: dict[str, Any], records: Sequence[Record], group_key: str) -> Example:
    """Adds the contract's provenance and a content-hash id to a task's line: the record ids and their categories,
    their external ids (aligned, when one has one), the first known session, run, tenant, source and bot, the store
    read (`source_uri`, `source_version`: Lance) and the created_at range."""
    provenance = dict(body.pop("provenance", {}))
    provenance.setdefault("record_ids", [r.id for r in records])
    # `_value_`, not the enum's `value` property, and plain loops: this runs once per example.
    provenance.setdefault("categories", [r.category._value_ if r.category else None for r in records])
    if any(r.external_id is not None for r in records):
        provenance.setdefault("external_ids", [r.external_id for r in records])
    for name in PROVENANCE_FIELDS:
        for record in records:
            value = getattr(record, name)
            if value is not None:
                provenance.setdefault(name, value)
                break
    store = next((r.origin for r in records if r.origin is not None and r.origin.uri is not None), None)
    if store is not None:
        provenance.setdefault("source_uri", store.uri)
        if store.version is not None:
            provenance.setdefault("source_version", store.version)
    dated = [r.created_at for r in records if r.created_at is not None]
    if dated:
        provenance.setdefault("created_at_start", format_timestamp(min(dated)))
        provenance.setdefault("created_at_end", format_timestamp(max(dated)))
    line = {**body, "provenance": provenance}
    canonical = canonical_json(line)
    example_id = canonical_content_id(prefix, canonical)
    return Example({"id": example_id, **line}, tuple(records), group_key, jsonl_with_id(canonical, example_id, line))


def jsonl_with_id(canonical: bytes, example_id: str, line: dict[str, Any]) -> bytes | None:
    """The JSONL line of `{"id": example_id, **line}` from `canonical`, the line's canonical JSON: keys are sorted,
    so when every key of the line sorts after `id` the line is `{"id":"...",` and the rest of the bytes already
    hashed, and need not be encoded again (measured in bench/RESULTS.md, "Lines from their hashed bytes"). None
    when a key sorts before `id` (orjson sorts keys by code point, as `<` on str does)."""
    if not all(key > "id" for key in line):
        return None
    head = b'{"id":' + orjson.dumps(example_id)
    return b"".join((head, b"," if line else b"", memoryview(canonical)[1:], b"\n"))


TASKS: Registry[type[Task]] = Registry("task")

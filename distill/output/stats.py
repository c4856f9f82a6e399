"""`stats.json`: an auditable summary of each dataset file (what went in, how it is shaped)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np

from distill.tasks.base import Example
from distill.tokens import TokenCounter, Tokenizer, token_length

NONE_KEY = "__none__"
EXACT_INT_LIMIT = 2**53
"""Floats as large as this are still exact integers: above it `int()` invents digits (and JSON writers choke)."""

# Fixed bin edges, the same for every run, so two runs' (or a sweep's jobs') histograms compare bin by bin.
# Bin i counts edges[i] <= v < edges[i + 1], the last bin includes its top edge; `under` / `over` count the rest.
HISTOGRAM_EDGES: dict[str, tuple[float, ...]] = {
    "tokens_per_example": (0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072),
    "turns_per_example": (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 32, 64, 128),
    "rewards": tuple(round(-1 + i / 10, 1) for i in range(21)),
}


def summary(values: Sequence[float]) -> dict[str, Any]:
    """count, min, median, p95, max, mean (None when empty), as plain JSON numbers."""
    if len(values) == 0:
        return {"count": 0, "min": None, "median": None, "p95": None, "max": None, "mean": None}
    array = np.asarray(values, dtype=np.float64)

    def number(value: float) -> float | int:
        value = float(value)
        return int(value) if value.is_integer() and abs(value) <= EXACT_INT_LIMIT else round(value, 6)

    return {
        "count": int(array.size),
        "min": number(array.min()),
        "median": number(np.median(array)),
        "p95": number(np.percentile(array, 95)),
        "max": number(array.max()),
        "mean": number(array.mean()),
    }


@dataclass
class StatsPart:
    """One partition's share of a dataset file's stats: counts that add up and the raw per-example and per-record
    values, so the merged quantiles are exact whatever the number of partitions. Groups never span partitions."""

    examples: int = 0
    records: int = 0
    groups: int = 0
    by_role: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    by_tenant: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)
    reward_sources: Counter[str] = field(default_factory=Counter)
    methods: set[str] = field(default_factory=set)
    """How records were counted (tokenizer, tokens_used, length_proxy)."""
    example_methods: set[str] = field(default_factory=set)
    """How lines were counted: as their records, or `chat_template` (a chat line rendered with the tokenizer's)."""
    records_per_group: list[np.ndarray] = field(default_factory=list)
    tokens_per_example: list[np.ndarray] = field(default_factory=list)
    tokens_per_record: list[np.ndarray] = field(default_factory=list)
    turns_per_example: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)

    def add(self, other: StatsPart) -> None:
        self.examples += other.examples
        self.records += other.records
        self.groups += other.groups
        for name in ("by_role", "by_source", "by_tenant", "by_category", "reward_sources"):
            getattr(self, name).update(getattr(other, name))
        self.methods |= other.methods
        self.example_methods |= other.example_methods
        self.records_per_group += other.records_per_group
        self.tokens_per_example += other.tokens_per_example
        self.tokens_per_record += other.tokens_per_record
        self.turns_per_example += other.turns_per_example
        self.rewards += other.rewards


def histogram(values: Sequence[float] | np.ndarray, edges: Sequence[float]) -> dict[str, Any]:
    """Counts of `values` in the fixed bins `edges` (see HISTOGRAM_EDGES)."""
    array = np.asarray(values, dtype=np.float64)
    inside = array[(array >= edges[0]) & (array <= edges[-1])]
    counts = np.histogram(inside, bins=np.asarray(edges, dtype=np.float64))[0] if inside.size else np.zeros(len(edges) - 1)
    return {
        "edges": [int(e) if float(e).is_integer() else e for e in edges],
        "counts": [int(c) for c in counts],
        "under": int((array < edges[0]).sum()),
        "over": int((array > edges[-1]).sum()),
    }


_PROFILE = attrgetter("role", "source", "tenant", "category")


def _key(value: str | None) -> str:
    return NONE_KEY if value is None else value


def stats_part(examples: Sequence[Example], tokenizer: TokenCounter | None = None) -> StatsPart:
    """The figures of some examples whose groups are all here (one partition's share of a file)."""
    records = {r.id: r for example in examples for r in example.records}.values()
    # Distinct records: one record may feed several lines of its group (a shared prompt, several pairs).
    per_group: dict[str, set[str]] = {}
    for example in examples:
        per_group.setdefault(example.group_key, set()).update(r.id for r in example.records)
    measured = {r.id: token_length(r, tokenizer) for r in records}
    methods = {method for _, method in measured.values()}
    if isinstance(tokenizer, Tokenizer) and tokenizer.method == "chat_template" and all(
        "messages" in example.line for example in examples
    ):
        # A conversation as the model sees it: rendered with the tokenizer's chat template, then encoded.
        lengths = [tokenizer.count_messages(example.line["messages"]) for example in examples]
        example_methods = {"chat_template"} if examples else set()
    else:
        lengths = [sum(measured[r.id][0] for r in example.records) for example in examples]
        example_methods = methods
    rewarded = [r for r in records if r.reward is not None]
    part = StatsPart(
        examples=len(examples),
        records=len(records),
        groups=len(per_group),
        reward_sources=Counter(_key(r.reward_source) for r in rewarded),
        methods=methods,
        example_methods=example_methods,
        records_per_group=[np.array([len(ids) for ids in per_group.values()], dtype=np.float64)],
        tokens_per_example=[np.array(lengths, dtype=np.float64)],
        tokens_per_record=[np.array([tokens for tokens, _ in measured.values()], dtype=np.float64)],
        turns_per_example=[np.array([len(example.records) for example in examples], dtype=np.float64)],
        rewards=[np.array([r.reward for r in rewarded], dtype=np.float64)],
    )
    # One pass in C over the records' (role, source, tenant, category), then one step per distinct combination:
    # there are few, and four Python passes over every record cost a tenth of the reduce's stats.
    for (role, source, tenant, category), count in Counter(map(_PROFILE, records)).items():
        part.by_role[_key(role.value if role else None)] += count
        part.by_source[_key(source)] += count
        part.by_tenant[_key(tenant)] += count
        part.by_category[_key(category.value if category else None)] += count
    return part


def _values(arrays: list[np.ndarray]) -> np.ndarray:
    # Sorted, so the mean sums in one order whatever the partitioning.
    return np.sort(np.concatenate(arrays)) if arrays else np.empty(0)


def _method(methods: set[str]) -> str:
    return next(iter(methods)) if len(methods) == 1 else "mixed" if methods else "length_proxy"


def file_stats(
    task: str, part: StatsPart, excluded: dict[str, dict[str, int]], *, form: str | None = None
) -> dict[str, Any]:
    """One file's section of stats.json from its merged parts. `form` is the task's output form (preference:
    paired, unpaired or ranked)."""
    return {
        "task": task,
        "form": form,
        "examples": part.examples,
        "records": part.records,
        "groups": part.groups,
        "by_role": dict(sorted(part.by_role.items())),
        "by_source": dict(sorted(part.by_source.items())),
        "by_tenant": dict(sorted(part.by_tenant.items())),
        "by_category": dict(sorted(part.by_category.items())),
        "records_per_group": summary(_values(part.records_per_group)),
        "tokens_per_example": {"method": _method(part.example_methods), **summary(_values(part.tokens_per_example))},
        "tokens_per_record": {"method": _method(part.methods), **summary(_values(part.tokens_per_record))},
        "rewards": {**summary(_values(part.rewards)), "by_source": dict(sorted(part.reward_sources.items()))},
        "excluded_by_step": excluded,
        "histograms": {
            "tokens_per_example": histogram(_values(part.tokens_per_example), HISTOGRAM_EDGES["tokens_per_example"]),
            "turns_per_example": histogram(_values(part.turns_per_example), HISTOGRAM_EDGES["turns_per_example"]),
            "rewards": histogram(_values(part.rewards), HISTOGRAM_EDGES["rewards"]),
        },
    }

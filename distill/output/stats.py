"""`stats.json`: an auditable summary of each dataset file (what went in, how it is shaped)."""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from distill.output.files import atomic_file
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


def summary(chunks: Sequence[Values]) -> dict[str, Any]:
    """count, min, median, p95, max, mean (None when empty), as plain JSON numbers, of the values of `chunks` taken
    together (arrays, or the sorted spills of a file's partitions). The same numbers numpy gives for all of them in
    one array, without one array: the median and p95 from order statistics found by bisection over the sorted chunks
    (`order_statistic`, interpolated as `np.percentile`'s default does), the mean from their exact sum (`math.fsum`,
    so no order of summing can move it). A spill is read mapped, and only where the bisection looks."""
    parts = [values for values in map(_sorted, chunks) if len(values)]
    count = sum(len(values) for values in parts)
    if count == 0:
        return {"count": 0, "min": None, "median": None, "p95": None, "max": None, "mean": None}

    def at(rank: int) -> float:
        return order_statistic(parts, rank)

    def number(value: float) -> float | int:
        value = float(value)
        return int(value) if value.is_integer() and abs(value) <= EXACT_INT_LIMIT else round(value, 6)

    middle = count // 2
    return {
        "count": count,
        "min": number(min(values[0] for values in parts)),
        "median": number(at(middle) if count % 2 else (at(middle - 1) + at(middle)) / 2),
        "p95": number(linear_quantile(at, count, 0.95)),
        "max": number(max(values[-1] for values in parts)),
        "mean": number(math.fsum(chain.from_iterable(values.tolist() for values in _each_loaded(chunks))) / count),
    }


def order_statistic(chunks: Sequence[np.ndarray], rank: int) -> float:
    """The value at `rank` (from 0) of the sorted, non-empty `chunks` taken together. A bisection over float64's own
    order (`_ordered`), between the smallest and the largest value: each step counts the values at or below a
    candidate in every chunk (`searchsorted`), so it takes at most 64 steps and reads a few pages of each chunk."""
    low, high = _ordered(min(values[0] for values in chunks)), _ordered(max(values[-1] for values in chunks))
    while low < high:
        middle = (low + high) // 2
        candidate = _unordered(middle)
        if sum(int(np.searchsorted(values, candidate, side="right")) for values in chunks) > rank:
            high = middle
        else:
            low = middle + 1
    return _unordered(low)  # a zero may come back -0.0 for 0.0: equal values, and stats.json writes both as 0


def linear_quantile(at: Callable[[int], float], count: int, quantile: float) -> float:
    """The `quantile` of `count` sorted values, `at(rank)` giving each, as `np.percentile`'s default ("linear")
    method computes it, step for step, so the value is the same to the last bit (tests/test_stats.py checks it)."""
    virtual = (count - 1) * quantile
    if virtual >= count - 1:
        return at(count - 1)
    below = math.floor(virtual)
    low, high = at(below), at(below + 1)
    gamma = virtual - below
    step = high - low
    return high - step * (1 - gamma) if gamma >= 0.5 else low + step * gamma


_SIGN = 1 << 63
_ALL = (1 << 64) - 1


def _ordered(value: float) -> int:
    """A float64 as an unsigned integer in the same order (-inf ... -0.0, 0.0 ... inf): its bits with the sign
    flipped for a positive value, every bit flipped for a negative one."""
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    return bits ^ _SIGN if not bits & _SIGN else bits ^ _ALL


def _unordered(key: int) -> float:
    bits = key ^ _SIGN if key & _SIGN else key ^ _ALL
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


@dataclass(frozen=True)
class SpilledValues:
    """One partition's values of one series, sorted, in a `.npy` file (`StatsPart.spill`): where a file's stats
    find them, so that neither a partition's result nor the merge holds them."""

    path: str
    count: int

    def __len__(self) -> int:
        return self.count


Values = np.ndarray | SpilledValues
"""A chunk of one series' values: an array a reduce is still adding to, or a partition's spill."""


def _sorted(chunk: Values) -> np.ndarray:
    """A chunk's values in order: a spill mapped (only the pages read are loaded), an array sorted."""
    if isinstance(chunk, SpilledValues):
        return np.load(chunk.path, mmap_mode="r", allow_pickle=False)
    return np.sort(np.asarray(chunk, dtype=np.float64))


def _each_loaded(chunks: Sequence[Values]) -> Iterator[np.ndarray]:
    """Each chunk's values read whole, one chunk at a time (a mapped spill read whole would stay in the process's
    resident memory until unmapped)."""
    for chunk in chunks:
        if isinstance(chunk, SpilledValues):
            yield np.load(chunk.path, allow_pickle=False)
        else:
            yield np.asarray(chunk, dtype=np.float64)


VALUE_SERIES = ("records_per_group", "tokens_per_example", "tokens_per_record", "turns_per_example", "rewards")
"""The values stats.json gives exact quantiles of: one per group, per example or per record."""


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
    records_per_group: list[Values] = field(default_factory=list)
    tokens_per_example: list[Values] = field(default_factory=list)
    tokens_per_record: list[Values] = field(default_factory=list)
    turns_per_example: list[Values] = field(default_factory=list)
    rewards: list[Values] = field(default_factory=list)

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

    def spill(self, folder: Path) -> None:
        """Writes each series' values, sorted, to `folder/<series>.npy` and keeps only where they are. A reduce
        spills its partition's part before it returns it: the merge then holds one partition's values at a time,
        where it held every partition's (at 1e7 bench records, ~400 MiB in the driver, bench/RESULTS.md)."""
        folder.mkdir(parents=True, exist_ok=True)
        for series in VALUE_SERIES:
            values = np.sort(np.concatenate([*_each_loaded(getattr(self, series)), np.empty(0)]))
            path = folder / f"{series}.npy"
            with atomic_file(path) as handle:
                np.save(handle, values, allow_pickle=False)
            setattr(self, series, [SpilledValues(str(path), len(values))] if len(values) else [])


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


def merged_histogram(chunks: Sequence[Values], edges: Sequence[float]) -> dict[str, Any]:
    """`histogram` of the values of `chunks` taken together: each chunk's counts, added, a chunk read at a time."""
    merged = histogram([], edges)
    for values in _each_loaded(chunks):
        counts = histogram(values, edges)
        merged["counts"] = [a + b for a, b in zip(merged["counts"], counts["counts"])]
        merged["under"] += counts["under"]
        merged["over"] += counts["over"]
    return merged


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
        "records_per_group": summary(part.records_per_group),
        "tokens_per_example": {"method": _method(part.example_methods), **summary(part.tokens_per_example)},
        "tokens_per_record": {"method": _method(part.methods), **summary(part.tokens_per_record)},
        "rewards": {**summary(part.rewards), "by_source": dict(sorted(part.reward_sources.items()))},
        "excluded_by_step": excluded,
        "histograms": {
            "tokens_per_example": merged_histogram(part.tokens_per_example, HISTOGRAM_EDGES["tokens_per_example"]),
            "turns_per_example": merged_histogram(part.turns_per_example, HISTOGRAM_EDGES["turns_per_example"]),
            "rewards": merged_histogram(part.rewards, HISTOGRAM_EDGES["rewards"]),
        },
    }

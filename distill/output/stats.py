"""`stats.json`: an auditable summary of each dataset file (what went in, how it is shaped)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from distill.record import Record
from distill.tasks.base import Example
from distill.tokens import TokenCounter, token_length

NONE_KEY = "__none__"

# Fixed bin edges, the same for every run, so two runs' (or a sweep's jobs') histograms compare bin by bin.
# Bin i counts edges[i] <= v < edges[i + 1], the last bin includes its top edge; `under` / `over` count the rest.
HISTOGRAM_EDGES: dict[str, tuple[float, ...]] = {
    "tokens_per_example": (0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072),
    "turns_per_example": (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 32, 64, 128),
    "rewards": tuple(round(-1 + i / 10, 1) for i in range(21)),
}


def summary(values: Sequence[float]) -> dict[str, Any]:
    """count, min, median, p95, max, mean (None when empty), as plain JSON numbers."""
    if not values:
        return {"count": 0, "min": None, "median": None, "p95": None, "max": None, "mean": None}
    array = np.asarray(values, dtype=np.float64)

    def number(value: float) -> float | int:
        value = float(value)
        return int(value) if value.is_integer() else round(value, 6)

    return {
        "count": int(array.size),
        "min": number(array.min()),
        "median": number(np.median(array)),
        "p95": number(np.percentile(array, 95)),
        "max": number(array.max()),
        "mean": number(array.mean()),
    }


def histogram(values: Sequence[float], edges: Sequence[float]) -> dict[str, Any]:
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


def _counts(values: Sequence[str | None]) -> dict[str, int]:
    return dict(sorted(Counter(NONE_KEY if v is None else v for v in values).items()))


def file_stats(
    task: str,
    examples: Sequence[Example],
    excluded: dict[str, dict[str, int]],
    *,
    form: str | None = None,
    tokenizer: TokenCounter | None = None,
) -> dict[str, Any]:
    """One file's section. `form` is the task's output form (preference: paired, unpaired or ranked)."""
    records = {r.id: r for example in examples for r in example.records}.values()
    # Distinct records: one record may feed several lines of its group (a shared prompt, several pairs).
    per_group: dict[str, set[str]] = {}
    for example in examples:
        per_group.setdefault(example.group_key, set()).update(r.id for r in example.records)
    measured = {r.id: token_length(r, tokenizer) for r in records}
    lengths = [sum(measured[r.id][0] for r in example.records) for example in examples]
    methods = {method for _, method in measured.values()}
    method = methods.pop() if len(methods) == 1 else "mixed" if methods else "length_proxy"
    rewards = [r.reward for r in records if r.reward is not None]
    turns = [len(example.records) for example in examples]
    return {
        "task": task,
        "form": form,
        "examples": len(examples),
        "records": len(records),
        "groups": len(per_group),
        "by_role": _counts([r.role.value if r.role else None for r in records]),
        "by_source": _counts([r.source for r in records]),
        "by_tenant": _counts([r.tenant for r in records]),
        "by_category": _counts([r.category.value if r.category else None for r in records]),
        "records_per_group": summary([len(ids) for ids in per_group.values()]),
        "tokens_per_example": {"method": method, **summary(lengths)},
        "rewards": {
            **summary(rewards),
            "by_source": _counts([r.reward_source for r in records if r.reward is not None]),
        },
        "excluded_by_step": excluded,
        "histograms": {
            "tokens_per_example": histogram(lengths, HISTOGRAM_EDGES["tokens_per_example"]),
            "turns_per_example": histogram(turns, HISTOGRAM_EDGES["turns_per_example"]),
            "rewards": histogram(rewards, HISTOGRAM_EDGES["rewards"]),
        },
    }

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
EXACT_INT_LIMIT = 2**53
"""Floats as large as this are still exact integers: above it `int()` invents digits (and JSON writers choke)."""


def summary(values: Sequence[float]) -> dict[str, Any]:
    """count, min, median, p95, max, mean (None when empty), as plain JSON numbers."""
    if not values:
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
    }

"""Helpers for the tests of single curation steps: build a step from params, run it through the real executor."""

from __future__ import annotations

import random
from collections.abc import Sequence

from distill.curation.chain import run_chain
from distill.grouping import key_function
from distill.quarantine import Ledger, QuarantineRow
from distill.record import Record
from distill.curation.steps import STEPS, Step, StepContext

CONTEXT = StepContext(group_key=key_function("session_id"))


def make_step(kind: str, name: str | None = None, **params) -> Step:
    """A step of `kind` under `name` (default: the kind), its params validated as the config would be."""
    cls = STEPS.get(kind)
    return cls(name or kind, cls.Params.model_validate(params), CONTEXT)


def rec(id: str, second: int = 0, **fields) -> Record:
    return Record(id=id, created_at=1767225600 + second, **fields)  # 2026-01-01T00:00:00Z + second


def apply(step: Step, records: Sequence[Record], batch_size: int = 2) -> tuple[list[str], dict[str, QuarantineRow], dict]:
    """(kept ids, quarantine rows by record id, the stage's manifest entry) after running `step` alone."""
    ledger = Ledger()
    kept, _, (report,) = run_chain([step], sorted(records, key=Record.order_key), ledger, batch_size)
    return [r.id for r in kept], {row.record_id: row for row in ledger.rows}, report.to_json()


def prose(seed: int, words: int = 120) -> list[str]:
    """Deterministic filler text: random words from a fixed vocabulary (unrelated seeds share few 5-grams)."""
    rng = random.Random(seed)
    return [rng.choice(VOCABULARY) for _ in range(words)]


def edited(words: list[str], every: int, seed: int = 0) -> list[str]:
    """A copy with one word in `every` replaced by a word not in the vocabulary."""
    rng = random.Random(seed)
    out = list(words)
    for position in range(rng.randrange(every), len(out), every):
        out[position] = f"edit{position}"
    return out


VOCABULARY = [
    f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "po", "ra", "se", "ti", "vu", "we", "xa", "yo", "zu", "be", "co")
    for b in ("dan", "fel", "gor", "hin", "jup", "kem", "lis", "mor", "nap", "ost", "pel", "qui", "ros", "sut")
]

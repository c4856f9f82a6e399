"""The (created_at, id) order in which every global step's keys are decided: "the first by (created_at, id)" never
depends on shard order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def in_order(
    micros: np.ndarray, ids: Sequence[str] | Callable[[np.ndarray], list[str]], among: np.ndarray | None = None
) -> np.ndarray:
    """The positions (of `among`, default all) in (created_at, id) order: a stable argsort by created_at (8 bytes
    per key), then, only among keys that share a created_at, a sort by id. Logged timestamps rarely tie, so sorting
    every id as a Python string (~0.7 s per 1e6 keys) is the exception, not the rule. `ids`: the ids, or a function
    giving the ids at some positions (for ids that wait on disk)."""
    among = np.arange(len(micros)) if among is None else among
    order = among[np.argsort(micros[among], kind="stable")]
    ordered = micros[order]
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] = ordered[1:] == ordered[:-1]
    if not tied.any():
        return order
    shares = tied.copy()
    shares[:-1] |= tied[1:]  # the first key of a run of equal created_at shares it too
    positions = np.flatnonzero(shares)
    runs = np.cumsum(~tied)[positions].tolist()
    tied_at = order[positions]
    tied_ids = ids(tied_at) if callable(ids) else [ids[i] for i in tied_at.tolist()]
    # Stable: keys equal in both keep their order, as the two stable argsorts this replaces kept it.
    by_id = sorted(range(len(positions)), key=lambda k: (runs[k], tied_ids[k]))
    order[positions] = order[positions][by_id]
    return order

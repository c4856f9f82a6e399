"""The train/eval split: whole groups, by a stable hash of (seed, key), the same on every machine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.errors import DistillError
from distill.grouping import GROUP_KINDS, Group, KeyFunction, display_key
from distill.hashing import unit_interval

TRAIN, EVAL, ALL = "train", "eval", "all"


class SplitParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none", "hash"]
    eval_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    seed: int = 0
    by: Literal[GROUP_KINDS] | None = None  # type: ignore[valid-type]


def side_of(key: str, seed: int, eval_fraction: float) -> str:
    return EVAL if unit_interval(str(seed), key) < eval_fraction else TRAIN


def assign_sides(groups: Sequence[Group], params: SplitParams, split_key: KeyFunction | None) -> dict[str, list[Group]]:
    """Sides -> groups. With `by` other than the group key, every record of a group must fall on one side."""
    if params.kind == "none":
        return {ALL: list(groups)}
    sides: dict[str, list[Group]] = {TRAIN: [], EVAL: []}
    for group in groups:
        if split_key is None:
            side = side_of(group.key, params.seed, params.eval_fraction)
        else:
            record_sides = {side_of(split_key(r), params.seed, params.eval_fraction) for r in group.records}
            if len(record_sides) > 1:
                raise DistillError(
                    f"split.by={params.by}: group {display_key(group.key)!r} would be split across train and eval; "
                    "split by the group key or a key that is constant within each group"
                )
            side = record_sides.pop() if record_sides else TRAIN
        sides[side].append(group)
    return sides

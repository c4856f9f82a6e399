"""What every phase of the plan shares: the run's parts, the partition count and where the spills live."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.hashing import hash64
from distill.plan.spill import merge_frame_bytes

if TYPE_CHECKING:
    from distill.config import Settings

WORK_DIR = ".distill-work"


@dataclass(frozen=True)
class Layout:
    """The run's working directory: every spill and completion marker of the plan, removed when the run ends."""

    root: Path

    @classmethod
    def of(cls, output_dir: Path) -> Layout:
        return cls(output_dir / WORK_DIR)

    def make(self, partitions: int, positions: list[int]) -> None:
        for folder in ("map", "ids", "quarantine", "decide", "reduce", "out", "parts", "keys", "merge"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        for partition in range(partitions):
            (self.root / "parts" / str(partition)).mkdir(exist_ok=True)
        for position in positions:
            (self.root / "keys" / str(position)).mkdir(exist_ok=True)

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.json"

    def map_done(self, shard: int) -> Path:
        return self.root / "map" / f"{shard}.done"

    def ids(self, shard: int) -> Path:
        return self.root / "ids" / f"{shard}.spill"

    def part(self, partition: int, shard: int) -> Path:
        return self.root / "parts" / str(partition) / f"{shard}.spill"

    def part_dir(self, partition: int) -> Path:
        return self.root / "parts" / str(partition)

    def keys(self, position: int, shard: int) -> Path:
        return self.root / "keys" / str(position) / f"{shard}.spill"

    def map_quarantine(self, shard: int) -> Path:
        return self.root / "quarantine" / f"map-{shard}.spill"

    def reduce_quarantine(self, partition: int) -> Path:
        return self.root / "quarantine" / f"reduce-{partition}.spill"

    @property
    def decide_done(self) -> Path:
        return self.root / "decide" / "decide.done"

    def decide_scratch(self, position: int) -> Path:
        """Where the decide phase scatters one step's keys into buckets (removed as each bucket is decided)."""
        return self.root / "decide" / f"scratch-{position}"

    def decisions(self, partition: int) -> Path:
        return self.root / "decide" / f"{partition}.spill"

    def reduce_done(self, partition: int) -> Path:
        return self.root / "reduce" / f"{partition}.done"

    def stats_values(self, side: str, partition: int) -> Path:
        """Where a partition's reduce spills one side's per-example and per-record values (`StatsPart.spill`)."""
        return self.root / "stats" / f"{side}-{partition}"

    def examples(self, side: str, partition: int) -> Path:
        return self.root / "out" / f"{side}-{partition}.spill"

    @property
    def merging(self) -> Path:
        """Where the merge's partial files and their checkpoints wait (`distill.output.merged_jsonl`)."""
        return self.root / "merge"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PlanContext:
    """The run's parts and the plan's shape, as every worker sees them."""

    settings: Settings
    layout: Layout
    partitions: int
    compress: bool
    config: dict[str, Any] | None = None
    shards: int = 0
    """The input's shard count: the quarantine is merged from a spill per shard (its parse drops) and per partition."""

    def partitions_of(self, group_keys: Iterable[str]) -> list[int]:
        """Each group key's partition, by distill's own stable hash of the key: a group's records always meet in one
        partition. One call for a batch: a call per record cost more than the hash."""
        if self.partitions == 1:
            return [0 for _ in group_keys]
        partitions = self.partitions
        return [hash64(key) % partitions for key in group_keys]

    @property
    def merge_frame_bytes(self) -> int:
        """The frame size of the example spills, which a dataset file's merge reads one of per partition."""
        return merge_frame_bytes(self.partitions)

    @property
    def quarantine_frame_bytes(self) -> int:
        """The frame size of the quarantine spills, which the quarantine's merge reads one of per shard and per
        partition."""
        return merge_frame_bytes(self.shards + self.partitions)

    def setup(self) -> None:
        for step in self.settings.steps:
            step.setup()

"""Preparing the plan: the input cut into shards, the partition count from the memory budget, and the plan's key,
which a resumed run must match before it reuses any finished shard or partition."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from distill.errors import DistillError
from distill.hashing import canonical_json, file_content_hash, sha256_hex
from distill.output.files import shown_path, write_bytes
from distill.plan.context import Layout
from distill.sources.base import Shard, balanced_count

MEMORY_PER_INPUT_BYTE = 4.5
"""Measured (bench/RESULTS.md): a reduce worker's peak grows by about 4.5x the JSONL bytes of its partition
(parsed records, their groups, examples, lines and quarantine rows)."""
WORKER_BUDGET_SHARE = 0.6
"""A reduce worker's partition may use this share of the worker's budget; the rest is the process itself."""


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str
    workers: int
    memory_bytes: int
    partitions: int | None
    shard_bytes: int
    compress_spills: bool
    address: str | None = None
    max_retries: int = 3


MAX_PARTITIONS = 4096


def partition_budget(executor: ExecutorSettings) -> float:
    """The bytes one partition's reduce may use: a worker's share of the budget, less what the process itself holds."""
    return executor.memory_bytes / max(executor.workers, 1) * WORKER_BUDGET_SHARE


def partition_count(input_bytes: int, executor: ExecutorSettings) -> int:
    """Enough partitions that one partition's records fit a worker's share of the memory budget, and a multiple of
    the workers: partitions are about equal in size, so with 17 partitions on 2 workers one worker would reduce
    the last one alone (2.6 s of 29 at 1e6 records, bench/RESULTS.md). An input that fits one partition keeps one
    (reduced in the driver, without starting a pool)."""
    needed = max(1, math.ceil(input_bytes * MEMORY_PER_INPUT_BYTE / partition_budget(executor)))
    return min(MAX_PARTITIONS, balanced_count(needed, executor.workers))


OPEN_FILES_MARGIN = 64
"""Files a process of the run holds open beside one per partition and one per shard: the input, the key and id
spills, the logs, Python's own."""


def open_files_needed(partitions: int, shards: int) -> int:
    """The most files one process of the run holds open at once: a map task writes one spill per partition, the
    decide one decision spill per partition, the merge reads every partition's spill of a file at once, and the
    quarantine's merge every shard's and every partition's."""
    return partitions + shards + OPEN_FILES_MARGIN


def check_open_files(partitions: int, shards: int, limit: int) -> None:
    """A plan that would hold more files open than the system allows stops before the map, in one line, instead of
    failing on "Too many open files" in whichever phase first reaches the limit."""
    needed = open_files_needed(partitions, shards)
    if needed > limit:
        raise DistillError(
            f"this plan holds up to {needed} files open at once ({partitions} partitions, {shards} shards), more "
            f"than this system allows ({limit}): raise the limit (`ulimit -n`), or lower the partitions "
            "(executor.partitions, or a larger executor.memory_gb) or the shards (a larger executor.shard_mb)"
        )


PLAN_FORMAT = 10
"""What the spills and the partitioning by `hash64` mean: raised whenever either changes (2: hash64 became XXH3; 3: a
record's blob holds its origin as an `Origin` struct; 4: the key holds each input's `file_content_hash`, not its
sha256; 5: a packed record's embedding is its own msgpack bytes; 6: `file_content_hash` is taken over the file's
halves, and a line's spilled sort key holds microseconds, not a datetime; 7: a packed embedding may be the JSON array
the fast lane kept from its line; 8: it is msgpack again; 9: exact_dedup's text keys are seeded by the role instead
of prefixed with it; 10: the spills a merge reads hold their lines a frame at a time, `write_line_spill`), so a run
interrupted under one distill is never resumed by another that would put a group in another partition or misread a
spill."""


def plan_key(config: dict[str, Any], shards: list[Shard]) -> str:
    """The plan's format, the resolved config without what may change between a run and its resume (`resume`,
    `executor.*`), and every input's hash."""
    stable = {key: value for key, value in config.items() if key not in ("resume", "executor")}
    hashes: dict[str, str | None] = {}
    for shard in shards:
        if shard.path is not None and shown_path(shard.path) not in hashes:  # a name may not be UTF-8
            # A Parquet file's sha256, taken while planning, is as good a key; any other file is read for its XXH3.
            hashes[shown_path(shard.path)] = shard.content_hash or shard.sha256 or file_content_hash(Path(shard.path))
    return sha256_hex(canonical_json(
        {"format": PLAN_FORMAT, "config": stable, "inputs": hashes, "shards": len(shards)}
    ))


def prepare(
    layout: Layout, shards: list[Shard], config: dict[str, Any], executor: ExecutorSettings, resume: bool
) -> int:
    """Writes (or, resuming, checks) the plan file; returns the partition count to use."""
    key = plan_key(config, shards)
    if resume and layout.plan_file.exists():
        stored = orjson.loads(layout.plan_file.read_bytes())
        if stored["key"] != key:
            raise DistillError(
                "resume=true: the config or the inputs changed since the interrupted run (or it was run by a distill "
                "whose plan format differs); start a new run (without resume) or restore them"
            )
        remove_stale_temporaries(layout)
        return int(stored["partitions"])
    layout.remove()
    input_bytes = sum(shard.size for shard in shards)
    partitions = executor.partitions or partition_count(input_bytes, executor)
    layout.root.mkdir(parents=True, exist_ok=True)
    write_bytes(layout.plan_file, orjson.dumps({"key": key, "partitions": partitions, "shards": len(shards)}))
    return partitions


def remove_stale_temporaries(layout: Layout) -> None:
    """Temporary files a killed run left behind (its spills and final files are only ever renamed into place)."""
    for path in [*layout.root.rglob("*.tmp"), *layout.root.parent.glob(".*.tmp")]:
        path.unlink(missing_ok=True)


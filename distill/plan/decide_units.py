"""near_dedup decided in bounded memory, in either scope: its units (conversations or records) are built one
partition bucket at a time and left on disk, and the clustering holds a few fixed-width numbers per unit.

A unit's densified signature (2 x `num_perm` bytes, 512 by default) dominates what deciding would hold: at 1e7
records in record scope, ~6.6 GB held whole. Here each bucket leaves its units' signatures (a `.npy` file), their
LSH band keys (one contiguous row per band), their names and their order keys ((created_at, id) of the first
record) on disk. A k-way merge of the buckets' ordered units numbers every unit in the order one pass over all
keys would give, so `NearDedup.decide_units` runs unchanged over `UnitsOnDisk`: it reads one band's keys at a time
(8 bytes per unit), the signatures of candidate pairs only (a bucket file at a time), and the names of the units
its clusters hold. The result, drops and figures, is the one of a single pass over every key.
"""

from __future__ import annotations

import heapq
import os
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from distill.curation import minhash
from distill.curation.steps.near_dedup import NearDedup, NearUnits
from distill.plan.spill import frames, read_values, write_spill

PAIRS_PER_GATHER = 1 << 20
"""Candidate pairs verified per gather of their signatures: 2 x 512 bytes each at most, ~1 GiB in all."""


def _write_array(path: Path, values: np.ndarray) -> None:
    """`values` as raw bytes under `path`, whole or not at all."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    values.tofile(temporary)
    os.replace(temporary, path)


class UnitsOnDisk:
    """The units of every bucket (`add`), numbered in (created_at, id) order by `number()`; `UnitSignatures` and
    `UnitNames` for `NearDedup.decide_units`. Holds per unit its bucket (4 bytes), its index there (8), its global
    number (8, by bucket) and its best reward (8)."""

    def __init__(self, scratch: Path, step: NearDedup, *, compress: bool) -> None:
        self.scratch = scratch
        self.step = step
        self.compress = compress
        self.counts: list[int] = []
        self.width = step.params.num_perm
        self.reward_parts: list[np.ndarray] = []
        self.bucket_of = np.empty(0, np.int32)
        self.local_of = np.empty(0, np.int64)
        self.numbers: list[np.ndarray] = []
        self.rewards = np.empty(0)

    def _path(self, bucket: int, what: str) -> Path:
        return self.scratch / f"units-{bucket}.{what}"

    def add(self, units: NearUnits, micros: np.ndarray, first_ids: list[str]) -> None:
        """One bucket's units, in its own (created_at, id) order of their first records (`micros`, `first_ids`)."""
        bucket = len(self.counts)
        signatures = np.ascontiguousarray(units.signatures, dtype=np.uint16)
        _write_array(self._path(bucket, "signatures"), signatures)
        bands = np.stack([minhash.band_key(signatures, band, self.step.rows) for band in range(self.step.bands)])
        _write_array(self._path(bucket, "bands"), np.ascontiguousarray(bands, dtype=np.uint64))
        del bands
        write_spill(self._path(bucket, "names"), frames(zip(units.names, units.last)), compress=self.compress)
        write_spill(self._path(bucket, "order"), frames(zip(micros.tolist(), first_ids)), compress=self.compress)
        self.counts.append(len(units.names))
        self.reward_parts.append(units.rewards)

    def number(self) -> None:
        """Every unit's number in the order of one pass over all keys: a k-way merge of the buckets' own orders
        by (created_at, id) of the first record (ids are unique, so the order is total)."""
        total = sum(self.counts)
        if len(self.counts) == 1:
            self.bucket_of = np.zeros(total, np.int32)
        else:
            streams = [self._ordered(bucket) for bucket in range(len(self.counts))]
            self.bucket_of = np.frombuffer(array("i", (b for _, _, b in heapq.merge(*streams))), dtype=np.int32)
        self.local_of = np.empty(total, np.int64)
        self.numbers = []
        self.rewards = np.empty(total)
        for bucket, count in enumerate(self.counts):
            numbers = np.flatnonzero(self.bucket_of == bucket)
            self.local_of[numbers] = np.arange(count)
            self.numbers.append(numbers)
            self.rewards[numbers] = self.reward_parts[bucket]
            self._path(bucket, "order").unlink(missing_ok=True)
        self.reward_parts = []

    def _ordered(self, bucket: int) -> Iterator[tuple[int, str, int]]:
        return ((micros, first_id, bucket) for micros, first_id in read_values(self._path(bucket, "order")))

    def held_bytes(self) -> int:
        """What is held per unit between bands, plus one band's keys: fixed-width numbers only."""
        arrays = [self.bucket_of, self.local_of, self.rewards, *self.numbers]
        return sum(a.nbytes for a in arrays) + 8 * len(self)

    def __len__(self) -> int:
        return len(self.bucket_of)

    def band_key(self, band: int, rows: int) -> np.ndarray:
        keys = np.empty(len(self), np.uint64)
        for bucket, count in enumerate(self.counts):
            keys[self.numbers[bucket]] = np.fromfile(
                self._path(bucket, "bands"), dtype=np.uint64, count=count, offset=band * count * 8
            )
        return keys

    def agreement(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        out = np.empty(len(left), dtype=np.float64)
        for start in range(0, len(left), PAIRS_PER_GATHER):
            stop = start + PAIRS_PER_GATHER
            wanted = np.union1d(left[start:stop], right[start:stop])
            signatures = self._signatures(wanted)
            out[start:stop] = minhash.agreement(
                signatures, np.searchsorted(wanted, left[start:stop]), np.searchsorted(wanted, right[start:stop])
            )
        return out

    def _signatures(self, units: np.ndarray) -> np.ndarray:
        """The signatures of these units (sorted numbers), read a bucket file at a time."""
        out = np.empty((len(units), self.width), np.uint16)
        buckets = self.bucket_of[units]
        for bucket in np.unique(buckets).tolist():
            chosen = np.flatnonzero(buckets == bucket)
            on_disk = np.memmap(self._path(bucket, "signatures"), dtype=np.uint16, mode="r").reshape(-1, self.width)
            out[chosen] = on_disk[self.local_of[units[chosen]]]
            del on_disk
        return out

    def named(self, units: np.ndarray) -> dict[int, tuple[str, str]]:
        found: dict[int, tuple[str, str]] = {}
        buckets = self.bucket_of[units]
        for bucket in np.unique(buckets).tolist():
            chosen = units[buckets == bucket]
            wanted = dict(zip(self.local_of[chosen].tolist(), chosen.tolist()))
            for local, name_and_last in enumerate(read_values(self._path(bucket, "names"))):
                number = wanted.get(local)
                if number is not None:
                    found[number] = name_and_last
        return found

    def remove(self) -> None:
        for bucket in range(len(self.counts)):
            for what in ("signatures", "bands", "names", "order"):
                self._path(bucket, what).unlink(missing_ok=True)

"""The global steps that compare every unit with every other (near_dedup's conversations or records,
semantic_dedup's records), decided in bounded memory: their units are built one partition bucket at a time and
left on disk, and the decision holds a few fixed-width numbers per unit.

A unit's fixed-width row dominates what deciding would hold: near_dedup's densified signature (2 x `num_perm`
bytes, 512 by default; ~6.6 GB at 1e7 records in record scope, held whole), semantic_dedup's embedding (4 bytes a
dimension: 6 KB for 1536). Here each bucket leaves its units' rows, LSH band keys (one contiguous row per band),
names and order keys ((created_at, id) of the first record) on disk. Sorting the order keys (created_at as a
fixed-width number, ids read back only where it ties) numbers every unit as one pass over all keys would, so the
steps' own decisions run unchanged over `UnitsOnDisk`: they read one band's keys at a time (8 bytes per unit), the
rows of candidate pairs only (a bucket file at a time), and the names of the units their decision names. Drops and
figures are those of a single pass over every key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from distill.curation import minhash
from distill.plan.ordering import in_order
from distill.plan.spill import frames, read_values, write_spill

GATHER_BYTES = 256 << 20
"""The rows of candidate pairs gathered at once to measure them (2 per pair at most): 256 MiB, half a million
512-byte signatures or ~85,000 768-wide embeddings."""


def _write_array(path: Path, values: np.ndarray) -> None:
    """`values` as raw bytes under `path`, whole or not at all."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    np.ascontiguousarray(values).tofile(temporary)
    os.replace(temporary, path)


class UnitsOnDisk:
    """The units of every bucket (`add`), numbered in (created_at, id) order by `number()`, their band keys
    written by `index_bands`. In memory per unit: its bucket (4 bytes), its index there (8), its number (8, by
    bucket) and one value the step ranks by (`values`, 8: near_dedup's best reward)."""

    def __init__(self, scratch: Path, *, compress: bool) -> None:
        self.scratch = scratch
        self.compress = compress
        self.counts: list[int] = []
        self.dtype: np.dtype | None = None
        self.width = 0
        self.value_parts: list[np.ndarray] = []
        self.bucket_of = np.empty(0, np.int32)
        self.local_of = np.empty(0, np.int64)
        self.numbers: list[np.ndarray] = []
        self.values = np.empty(0)

    def _path(self, bucket: int, what: str) -> Path:
        return self.scratch / f"units-{bucket}.{what}"

    def add(
        self, rows: np.ndarray, names: list[str], last: list[str], micros: np.ndarray, first_ids: list[str],
        values: np.ndarray | None = None,
    ) -> None:
        """One bucket's units, in its own (created_at, id) order of their first records (`micros`, `first_ids`):
        each one's fixed-width row, name and last record's id (what a report shows of it)."""
        if self.dtype is None:
            self.dtype, self.width = rows.dtype, rows.shape[1]
            self.scratch.mkdir(parents=True, exist_ok=True)
        bucket = len(self.counts)
        _write_array(self._path(bucket, "rows"), rows.astype(self.dtype, copy=False))
        write_spill(self._path(bucket, "names"), frames(zip(names, last)), compress=self.compress)
        _write_array(self._path(bucket, "micros"), np.asarray(micros, dtype=np.int64))
        write_spill(self._path(bucket, "ids"), frames(first_ids), compress=self.compress)
        self.counts.append(len(names))
        self.value_parts.append(values if values is not None else np.zeros(len(names)))

    def number(self) -> None:
        """Every unit's number in the order of one pass over all keys: the buckets' units by (created_at, id) of
        their first record (`in_order`: the ids are read from disk only where created_at ties across units)."""
        total = sum(self.counts)
        owner = np.repeat(np.arange(len(self.counts), dtype=np.int32), self.counts)
        local = np.concatenate([np.arange(count, dtype=np.int64) for count in self.counts])
        if len(self.counts) == 1:
            order = np.arange(total)  # a bucket's units arrive in its own order
        else:
            micros = np.concatenate([
                np.fromfile(self._path(bucket, "micros"), dtype=np.int64) for bucket in range(len(self.counts))
            ])
            order = in_order(micros, lambda at: self._first_ids(owner[at], local[at]))
            del micros
        self.bucket_of, self.local_of = owner[order], local[order]
        del owner, local, order
        self.numbers = []
        self.values = np.empty(total)
        for bucket in range(len(self.counts)):
            numbers = np.flatnonzero(self.bucket_of == bucket)
            self.numbers.append(numbers)
            self.values[numbers] = self.value_parts[bucket]
            self._path(bucket, "micros").unlink(missing_ok=True)
            self._path(bucket, "ids").unlink(missing_ok=True)
        self.value_parts = []

    def _first_ids(self, buckets: np.ndarray, locals_: np.ndarray) -> list[str]:
        """The first record's id of the units at (bucket, index there), in that order."""
        found: dict[tuple[int, int], str] = {}
        for bucket in np.unique(buckets).tolist():
            for local, first_id in self._picked(bucket, "ids", locals_[buckets == bucket]):
                found[(bucket, local)] = first_id
        return [found[key] for key in zip(buckets.tolist(), locals_.tolist())]

    def _picked(self, bucket: int, what: str, locals_: np.ndarray) -> Iterator[tuple[int, Any]]:
        """(index, value) of the bucket's spilled values (`what`) at these indexes, read in one pass."""
        wanted = set(locals_.tolist())
        for local, value in enumerate(read_values(self._path(bucket, what))):
            if local in wanted:
                yield local, value

    def index_bands(self, keys_of: Callable[[np.ndarray], np.ndarray]) -> None:
        """Each bucket's band keys, `keys_of(its rows)` (a (bands, units) uint64 array), to disk."""
        for bucket in range(len(self.counts)):
            rows = np.fromfile(self._path(bucket, "rows"), dtype=self.dtype).reshape(-1, self.width)
            keys = keys_of(rows)
            del rows
            _write_array(self._path(bucket, "bands"), keys.astype(np.uint64, copy=False))

    def held_bytes(self) -> int:
        """What is held per unit, plus one band's keys: fixed-width numbers only."""
        arrays = [self.bucket_of, self.local_of, self.values, *self.numbers]
        return sum(a.nbytes for a in arrays) + 8 * len(self)

    def __len__(self) -> int:
        return len(self.bucket_of)

    def band_key(self, band: int, rows: int = 0) -> np.ndarray:
        """Every unit's key of one band (`rows`: how the keys were made, fixed by `index_bands`)."""
        keys = np.empty(len(self), np.uint64)
        for bucket, count in enumerate(self.counts):
            keys[self.numbers[bucket]] = np.fromfile(
                self._path(bucket, "bands"), dtype=np.uint64, count=count, offset=band * count * 8
            )
        return keys

    def pairwise(
        self, left: np.ndarray, right: np.ndarray, measure: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """`measure(rows, left, right)` of the unit pairs (left[i], right[i]), their rows gathered from disk, in the
        measure's own dtype."""
        step = max(1, GATHER_BYTES // (2 * self.width * self.dtype.itemsize))
        parts = []
        for start in range(0, len(left), step):
            stop = start + step
            wanted = np.union1d(left[start:stop], right[start:stop])
            rows = self._gathered(wanted)
            parts.append(measure(
                rows, np.searchsorted(wanted, left[start:stop]), np.searchsorted(wanted, right[start:stop])
            ))
            del rows
        return np.concatenate(parts) if parts else measure(np.empty((0, self.width), self.dtype), left, right)

    def agreement(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self.pairwise(left, right, minhash.agreement)

    def _gathered(self, units: np.ndarray) -> np.ndarray:
        """The rows of these units, read a bucket file at a time."""
        out = np.empty((len(units), self.width), self.dtype)
        buckets = self.bucket_of[units]
        for bucket in np.unique(buckets).tolist():
            chosen = np.flatnonzero(buckets == bucket)
            on_disk = np.memmap(self._path(bucket, "rows"), dtype=self.dtype, mode="r").reshape(-1, self.width)
            out[chosen] = on_disk[self.local_of[units[chosen]]]
            del on_disk
        return out

    def named(self, units: np.ndarray) -> dict[int, tuple[str, str]]:
        """unit -> (its name, its last record's id), for these units only."""
        found: dict[int, tuple[str, str]] = {}
        buckets = self.bucket_of[units]
        for bucket in np.unique(buckets).tolist():
            numbers = self.numbers[bucket]
            for local, name_and_last in self._picked(bucket, "names", self.local_of[units[buckets == bucket]]):
                found[int(numbers[local])] = name_and_last
        return found

    def remove(self) -> None:
        for bucket in range(len(self.counts)):
            for what in ("rows", "bands", "names", "micros", "ids"):
                self._path(bucket, what).unlink(missing_ok=True)

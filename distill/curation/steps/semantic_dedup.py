from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import Field, model_validator

from distill.curation import clusters, minhash
from distill.errors import DistillError
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import STEPS, GlobalStep, StepParams
from distill.curation.steps.roles import in_roles

_PLANE_SEED = 0x5E3A471C
TARGET_RECALL = 0.99
MAX_ROWS, MAX_BANDS = 64, 64


class SemanticDedupParams(StepParams):
    threshold: float = Field(default=0.05, ge=0, lt=1)
    roles: tuple[str, ...] | None = None
    bands: int | None = Field(default=None, ge=1)
    rows: int | None = Field(default=None, ge=1, le=64)
    window: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _both_or_neither(self) -> SemanticDedupParams:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (then they follow from threshold)")
        return self


@dataclass(frozen=True)
class EmbeddingKeys:
    """Per batch, the records in scope that carry an embedding: id and the unit-length vector (float32)."""

    ids: list[str]
    vectors: np.ndarray


PROJECTED_ROWS = 16384
"""Records projected on the hyperplanes at once."""


class Embeddings(Protocol):
    """Where the decision reads the records' unit-length embeddings, numbered in (created_at, id) order: arrays in
    memory, or the plan's buckets on disk (`distill.plan.decide_units.UnitsOnDisk`)."""

    width: int

    def __len__(self) -> int: ...

    def index_bands(self, keys_of: Callable[[np.ndarray], np.ndarray]) -> None:
        """Every band's keys of the embeddings, `keys_of(vectors)`, kept for `band_key`."""

    def band_key(self, band: int, rows: int = 0) -> np.ndarray: ...

    def pairwise(
        self, left: np.ndarray, right: np.ndarray, measure: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    ) -> np.ndarray: ...

    def named(self, units: np.ndarray) -> dict[int, tuple[str, str]]: ...


@dataclass
class EmbeddingsInMemory:
    """`Embeddings` held whole."""

    ids: list[str]
    vectors: np.ndarray
    keys: np.ndarray | None = None

    @property
    def width(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.ids)

    def index_bands(self, keys_of: Callable[[np.ndarray], np.ndarray]) -> None:
        self.keys = keys_of(self.vectors)

    def band_key(self, band: int, rows: int = 0) -> np.ndarray:
        return self.keys[band]

    def pairwise(
        self, left: np.ndarray, right: np.ndarray, measure: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    ) -> np.ndarray:
        return measure(self.vectors, left, right)

    def named(self, units: np.ndarray) -> dict[int, tuple[str, str]]:
        return {unit: (self.ids[unit], self.ids[unit]) for unit in units.tolist()}


@STEPS.register("semantic_dedup")
class SemanticDedup(GlobalStep[EmbeddingKeys]):
    """Drops semantic duplicates (`semantic_duplicate`): a record whose `embedding` is within cosine distance
    `threshold` (1 - cosine similarity) of an earlier kept record, in (created_at, id) order. Records without an
    embedding are kept.

    Indexed, not O(n^2): random-hyperplane LSH (`bands` x `rows` sign bits, chosen from the threshold when not set)
    proposes candidates; within a bucket each record is compared with the bucket's first record and the `window`
    records before it; candidates are verified on the exact cosine, then the earliest-first greedy rule decides.
    The quarantine detail names the kept record it duplicates and the distance.
    """

    kind = "semantic_dedup"
    Params = SemanticDedupParams
    reasons = (Reason.semantic_duplicate,)
    params: SemanticDedupParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def keys(self, batch: Sequence[Record]) -> EmbeddingKeys:
        chosen = in_roles(batch, self.params.roles, lambda r: r.embedding)
        dims = {len(r.embedding) for r in chosen}
        if len(dims) > 1:
            raise DistillError(f"curation.steps.{self.name}: embeddings of different lengths {sorted(dims)}")
        if not chosen:  # a batch without embeddings (numpy cannot infer the width of no rows)
            return EmbeddingKeys([], np.empty((0, 0), np.float32))
        vectors = np.array([r.embedding for r in chosen], dtype=np.float32).reshape(len(chosen), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return EmbeddingKeys([r.id for r in chosen], vectors / np.where(norms == 0, 1, norms))

    def decide(self, keys: Sequence[EmbeddingKeys]) -> dict[str, Drop]:
        batches = [batch for batch in keys if batch.ids]
        if not batches:
            return {}
        if len({batch.vectors.shape[1] for batch in batches}) > 1:
            raise DistillError(f"curation.steps.{self.name}: embeddings of different lengths")
        ids = [record_id for batch in batches for record_id in batch.ids]
        return self.decide_embeddings(EmbeddingsInMemory(ids, np.concatenate([batch.vectors for batch in batches])))

    def decide_embeddings(self, embeddings: Embeddings) -> dict[str, Drop]:
        """The drops of these records' embeddings, numbered in (created_at, id) order."""
        count = len(embeddings)
        self.bands, self.rows = self._lsh_shape(count)
        planes = _hyperplanes(embeddings.width, self.bands * self.rows)
        embeddings.index_bands(lambda vectors: self.band_keys(vectors, planes))
        left, right = self._candidates(embeddings, count)
        similarity = embeddings.pairwise(left, right, _pair_similarity)
        close = similarity >= 1 - self.params.threshold - 1e-6
        # Edges point from an earlier record to a later one; visiting them by (later, earlier) applies the greedy
        # rule in record order: a record goes when an earlier record it is close to was kept.
        order = np.lexsort((left[close], right[close]))
        earlier_ones, later_ones = left[close][order], right[close][order]
        named = embeddings.named(np.union1d(earlier_ones, later_ones))
        drops: dict[str, Drop] = {}
        dropped: set[int] = set()
        for earlier, later, sim in zip(earlier_ones.tolist(), later_ones.tolist(), similarity[close][order].tolist()):
            if later in dropped or earlier in dropped:
                continue
            dropped.add(later)
            distance = round(max(0.0, 1 - sim), 6)
            kept_id = named[earlier][0]
            drops[named[later][0]] = Drop(
                Reason.semantic_duplicate,
                (f"embedding within cosine distance {distance:.4f} of {kept_id}",),
                {"duplicate_of": kept_id, "distance": distance},
            )
        self.figures.update(
            bands=self.bands, rows=self.rows, candidate_pairs=int(len(left)), close_pairs=int(close.sum())
        )
        return drops

    def band_keys(self, vectors: np.ndarray, planes: np.ndarray) -> np.ndarray:
        """(bands, records) uint64: each band's `rows` sign bits of the projections on `planes`."""
        weights = np.left_shift(np.uint64(1), np.arange(self.rows, dtype=np.uint64))
        keys = np.empty((self.bands, len(vectors)), np.uint64)
        for start in range(0, len(vectors), PROJECTED_ROWS):
            bits = _signs(vectors[start : start + PROJECTED_ROWS], planes)
            for band in range(self.bands):
                block = bits[:, band * self.rows : (band + 1) * self.rows]
                keys[band, start : start + len(bits)] = (block.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
        return keys

    def _candidates(self, embeddings: Embeddings, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(earlier, later) index pairs sharing an LSH bucket: each record with its bucket's first record and the
        `window` records before it in that bucket."""
        codes = np.empty(0, np.int64)
        for band in range(self.bands):
            lefts, rights = [], []
            key = embeddings.band_key(band)
            order = np.argsort(key, kind="stable")
            ordered = key[order]
            del key
            starts_run = np.r_[True, ordered[1:] != ordered[:-1]]
            head = np.maximum.accumulate(np.where(starts_run, np.arange(count), 0))
            members = np.flatnonzero(~starts_run)
            lefts.append(order[head[members]])
            rights.append(order[members])
            for back in range(1, self.params.window + 1):
                members = members[members - back > head[members]]
                lefts.append(order[members - back])
                rights.append(order[members])
            # Each band's pairs join the distinct ones found so far: every band's are never held at once.
            codes = clusters.with_pairs(codes, np.concatenate(lefts), np.concatenate(rights), count)
        return clusters.pairs_of(codes, count)

    def _lsh_shape(self, count: int) -> tuple[int, int]:
        """(bands, rows): as configured, else enough sign bits per band that chance collisions stay rare at this
        many records (~log2 count), and enough bands that a pair right at the threshold is found with p >= 0.99."""
        if self.params.bands is not None:
            return self.params.bands, self.params.rows
        # A random hyperplane separates two unit vectors at angle a with probability a / pi.
        agreement = 1 - math.acos(max(-1.0, 1 - self.params.threshold)) / math.pi
        rows = min(MAX_ROWS, max(8, math.ceil(math.log2(max(count, 2))) + 2))
        found_once = max(agreement**rows, 1e-12)
        bands = math.ceil(math.log(1 - TARGET_RECALL) / math.log1p(-found_once)) if found_once < 1 else 1
        return min(max(bands, 1), MAX_BANDS), rows

    def manifest_extra(self) -> dict[str, Any]:
        return dict(self.figures)


PAIR_CHUNK_BYTES = 32 << 20
"""The vectors of one side of the pairs measured at once: 32 MiB (~11,000 768-wide embeddings)."""


def _pair_similarity(vectors: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    out = np.empty(len(left), dtype=np.float32)
    chunk = max(1024, PAIR_CHUNK_BYTES // max(1, vectors.shape[1] * vectors.itemsize))
    for start in range(0, len(left), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("ij,ij->i", vectors[left[start:stop]], vectors[right[start:stop]])
    return out


def _signs(vectors: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """`vectors @ planes > 0` for the unit vectors quantized to integers (a power-of-two scale: 13 bits for 768
    dimensions) small enough that every partial sum stays below 2**23, so float32 adds them exactly: the signs
    never depend on the order the BLAS adds in, nor on how many rows one call holds (the plan projects one bucket
    of records at a time; plain float32 sums of a projection near 0 could come out either side). Quantizing moves
    a projection (of spread ~1 over the +-1 planes) by ~1e-3, far inside what LSH tolerates: candidates are
    verified on the exact cosine."""
    dims = vectors.shape[1]
    scale = np.float32(2.0 ** (23 - max(1, math.ceil(math.log2(max(dims, 2))))))
    return (np.rint(vectors.astype(np.float32) * scale) @ planes.astype(np.float32)) > 0


def _hyperplanes(dims: int, count: int) -> np.ndarray:
    """(dims, count) random +-1 hyperplane normals, from our own hash so they are the same on every machine."""
    cells = np.arange(dims * count, dtype=np.uint64) + np.uint64(_PLANE_SEED)
    signs = (minhash.mix64(cells) >> np.uint64(63)).astype(np.float32) * 2 - 1
    return signs.reshape(dims, count)

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from distill.curation import minhash
from distill.errors import DistillError
from distill.curation.evalsets import EvalItem, eval_files, load_eval_items
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import STEPS, GlobalStep, StepParams
from distill.curation.steps.roles import has_text, in_roles
from distill.curation.textnorm import normalize_words_bytes

# preset -> (n-gram size, the share of an eval item's tokens that must be covered, exclusive)
PRESETS: dict[str, tuple[int, float]] = {
    "overlap": (8, 0.5),  # Tulu 3: > 50% of the item's tokens covered by 8-grams found in the record
    "any13": (13, 0.0),  # GPT-3: any shared 13-gram
}
PREVIEW_CHARS = 200


class DecontaminateParams(StepParams):
    eval_sets: tuple[str, ...] = ()
    mode: Literal["ngram", "embedding"] = "ngram"
    preset: Literal["overlap", "any13"] = "overlap"
    ngram_size: int | None = Field(default=None, ge=1, le=64)
    min_overlap_ratio: float | None = Field(default=None, ge=0, lt=1)
    threshold: float = Field(default=0.05, ge=0, le=2)
    roles: tuple[str, ...] | None = None

    @field_validator("eval_sets")
    @classmethod
    def _eval_sets_exist(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        missing = [pattern for pattern in patterns if not eval_files(pattern)]
        if missing:
            raise ValueError(f"no file matches {', '.join(missing)}")
        return patterns


@dataclass(frozen=True)
class NgramHits:
    """Per batch, the records that share at least one n-gram with an eval item, and the distinct shared hashes."""

    ids: list[str]
    matched: list[np.ndarray]


@dataclass(frozen=True)
class EmbeddingHits:
    """Per batch, the records within `threshold` cosine distance of an eval item: the nearest item and distance;
    records without a usable embedding have item -1 (counted for the manifest, never dropped)."""

    ids: list[str]
    items: list[int]
    distances: list[float]


@STEPS.register("decontaminate")
class Decontaminate(GlobalStep[NgramHits | EmbeddingHits]):
    """Drops records that leak held-out eval items (`contaminated`), so no eval answer is trained on.

    `mode: ngram` compares word n-grams after normalisation (lowercase, no punctuation or diacritics): an item has
    leaked into a record when more than `min_overlap_ratio` of the item's tokens are covered by n-grams that also
    occur in the record. Presets: `overlap` (n=8, ratio 0.5, the Tulu 3 rule; default) and `any13` (n=13, any
    shared 13-gram, the GPT-3 rule); `ngram_size` / `min_overlap_ratio` override the preset. Items shorter than n
    words cannot be matched and are counted as `short_items`. `mode: embedding` drops records whose `embedding` is
    within cosine distance `threshold` of an eval item's embedding (records without one are kept).
    The quarantine detail names the eval set, the item and the matched n-gram; the manifest counts hits per set.
    """

    kind = "decontaminate"
    Params = DecontaminateParams
    reasons = (Reason.contaminated,)
    params: DecontaminateParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        preset_size, preset_ratio = PRESETS[self.params.preset]
        self.size = self.params.ngram_size or preset_size
        self.ratio = self.params.min_overlap_ratio if self.params.min_overlap_ratio is not None else preset_ratio
        self._items: list[EvalItem] | None = None

    # -- the eval side, loaded once ------------------------------------------------------------------------------

    def _load(self) -> None:
        if self._items is not None:
            return
        self._items = load_eval_items(list(self.params.eval_sets), f"curation.steps.{self.name}.eval_sets")
        self.figures["eval_items"] = dict(Counter(item.eval_set for item in self._items))
        if self.params.mode == "ngram":
            self._index_ngrams()
        else:
            self._index_embeddings()

    def _index_ngrams(self) -> None:
        normalized = [normalize_words_bytes(item.text) for item in self._items]
        self._item_words = [text.split() for text in normalized]
        spans = minhash.WordSpans(normalized)
        hashes, owners, starts = minhash.ngram_hashes(spans, self.size)
        order = np.argsort(hashes, kind="stable")
        self._hashes, self._owners, self._starts = hashes[order], owners[order], starts[order]
        self._distinct = np.unique(hashes)
        self.figures["short_items"] = int((spans.counts < self.size).sum())

    def _index_embeddings(self) -> None:
        usable = [i for i, item in enumerate(self._items) if item.embedding is not None]
        if not usable:
            raise DistillError(
                f"curation.steps.{self.name}.eval_sets: mode embedding, but no eval item has an embedding"
            )
        dims = {len(self._items[i].embedding) for i in usable}
        if len(dims) > 1:
            raise DistillError(f"curation.steps.{self.name}.eval_sets: eval embeddings differ in length {sorted(dims)}")
        self._usable = np.array(usable)
        self._eval_vectors = _unit_rows(np.array([self._items[i].embedding for i in usable], dtype=np.float32))
        self.figures["items_without_embedding"] = len(self._items) - len(usable)

    def setup(self) -> None:
        self._load()

    # -- keys / decide -------------------------------------------------------------------------------------------

    def keys(self, batch: Sequence[Record]) -> NgramHits | EmbeddingHits:
        self._load()
        records = in_roles(batch, self.params.roles, has_text)
        if self.params.mode == "embedding":
            return self._embedding_hits(records)
        if not records or len(self._distinct) == 0:
            return NgramHits([], [])
        spans = minhash.WordSpans([normalize_words_bytes(r.text) for r in records])
        hashes, owners, _ = minhash.ngram_hashes(spans, self.size)
        slot = np.minimum(np.searchsorted(self._distinct, hashes), len(self._distinct) - 1)
        found = self._distinct[slot] == hashes
        hit_hashes, hit_owners = hashes[found], owners[found]
        order = np.lexsort((hit_hashes, hit_owners))
        hit_hashes, hit_owners = hit_hashes[order], hit_owners[order]
        bounds = np.flatnonzero(np.r_[True, hit_owners[1:] != hit_owners[:-1], True]) if len(order) else [0]
        hits = NgramHits([], [])
        for start, end in zip(bounds[:-1], bounds[1:]):
            hits.ids.append(records[hit_owners[start]].id)
            hits.matched.append(np.unique(hit_hashes[start:end]))
        return hits

    def _embedding_hits(self, records: list[Record]) -> EmbeddingHits:
        dim = self._eval_vectors.shape[1]
        with_vectors = [r for r in records if r.embedding is not None and len(r.embedding) == dim]
        without = [r for r in records if r.embedding is None or len(r.embedding) != dim]
        hits = EmbeddingHits([r.id for r in without], [-1] * len(without), [float("nan")] * len(without))
        if not with_vectors:
            return hits
        similarity = _unit_rows(np.array([r.embedding for r in with_vectors], dtype=np.float32)) @ self._eval_vectors.T
        nearest = similarity.argmax(axis=1)
        distance = 1.0 - similarity[np.arange(len(with_vectors)), nearest]
        for row in np.flatnonzero(distance <= self.params.threshold + 1e-6).tolist():
            hits.ids.append(with_vectors[row].id)
            hits.items.append(int(self._usable[nearest[row]]))
            hits.distances.append(max(0.0, float(distance[row])))
        return hits

    def decide(self, keys: Sequence[NgramHits | EmbeddingHits]) -> dict[str, Drop]:
        self._load()
        drops: dict[str, Drop] = {}
        hits: Counter[str] = Counter()
        first_hits: dict[str, dict[str, Any]] = {}
        for batch in keys:
            if isinstance(batch, EmbeddingHits):
                hits["\x00without_embedding"] += batch.items.count(-1)
                verdicts = (
                    None if item == -1 else self._embedding_drop(item, distance)
                    for item, distance in zip(batch.items, batch.distances)
                )
            else:
                verdicts = (self._ngram_drop(matched) for matched in batch.matched)
            for record_id, drop in zip(batch.ids, verdicts):
                if drop is not None:
                    drops[record_id] = drop
                    hits[drop.detail["eval_set"]] += 1
                    first_hits.setdefault(drop.detail["eval_set"], _first_hit(record_id, drop))
        self.figures["hits"] = {name: hits.get(name, 0) for name in self.figures["eval_items"]}
        self.figures["first_hits"] = dict(sorted(first_hits.items()))
        if self.params.mode == "embedding":
            self.figures["records_without_embedding"] = hits["\x00without_embedding"]
        return drops

    def _ngram_drop(self, matched: np.ndarray) -> Drop | None:
        """The rule, for one record: the eval item it covers most, if more than `ratio` of that item is covered."""
        left = np.searchsorted(self._hashes, matched, side="left")
        right = np.searchsorted(self._hashes, matched, side="right")
        positions = np.concatenate([np.arange(a, b) for a, b in zip(left.tolist(), right.tolist())])
        best: tuple[float, int, int] | None = None
        items = self._owners[positions]
        for item in np.unique(items).tolist():
            starts = np.sort(self._starts[positions[items == item]])
            covered = np.zeros(len(self._item_words[item]), dtype=bool)
            for start in starts.tolist():
                covered[start : start + self.size] = True
            share = float(covered.mean())
            if share > self.ratio and (best is None or share > best[0]):
                best = (share, item, int(starts[0]))
        if best is None:
            return None
        share, item, start = best
        ngram = b" ".join(self._item_words[item][start : start + self.size]).decode("utf-8")
        eval_item = self._items[item]
        return Drop(
            Reason.contaminated,
            (f"{share:.0%} of eval item {eval_item.eval_set}/{eval_item.item} found in the text (e.g. {ngram!r})",),
            {"eval_set": eval_item.eval_set, "eval_item": eval_item.item, "matched_ngram": ngram,
             "overlap": round(share, 4), "eval_text": eval_item.text[:PREVIEW_CHARS]},
        )

    def _embedding_drop(self, item: int, distance: float) -> Drop:
        eval_item = self._items[item]
        return Drop(
            Reason.contaminated,
            (f"embedding within cosine distance {distance:.4f} of eval item {eval_item.eval_set}/{eval_item.item}",),
            {"eval_set": eval_item.eval_set, "eval_item": eval_item.item, "distance": round(distance, 6),
             "eval_text": eval_item.text[:PREVIEW_CHARS]},
        )

    def manifest_extra(self) -> dict[str, Any]:
        figures = {"mode": self.params.mode, **self.figures}
        if self.params.mode == "ngram":
            figures.update(ngram_size=self.size, min_overlap_ratio=self.ratio)
        return figures


def _first_hit(record_id: str, drop: Drop) -> dict[str, Any]:
    """What the manifest keeps of an eval set's first hit (one per set, so bounded): the record, the item and the
    matched n-gram (or distance)."""
    keep = ("eval_item", "matched_ngram", "overlap", "distance")
    return {"record_id": record_id, **{key: drop.detail[key] for key in keep if key in drop.detail}}


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)

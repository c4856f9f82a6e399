"""Vectorised MinHash for a batch of texts: word shingles, one-permutation hashing, densification, LSH bands.

Why this shape: classic MinHash hashes every shingle once per permutation (k hashes per shingle), which is what
makes Python MinHash tools slow. One-permutation hashing (Li, Owen & Zhang 2012) hashes each shingle once and
splits the hash space into k bins, keeping the minimum per bin; empty bins (short texts) are filled by optimal
densification (Shrivastava 2017), so two signatures still agree in a slot with probability = their Jaccard
similarity. Everything runs as numpy array operations over a whole batch: words are hashed with a polynomial
prefix hash over the batch's bytes, never one Python call per word.

Signatures hold 16-bit minima (b-bit MinHash, Li & Koenig 2010): a chance agreement costs 2**-16 per slot, and
a signature is 2 bytes per slot. Undensified signatures merge by element-wise minimum, so a conversation's
signature is the minimum over its records' signatures (group scope) without revisiting any text.

All constants are fixed: the same text gives the same signature on every machine and run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distill.textnorm import normalize_words_bytes

EMPTY = np.uint16(0xFFFF)
_U64 = np.uint64
_BASE = 0x100000001B3  # odd, so its powers are invertible modulo 2**64
_BASE_INVERSE = pow(_BASE, -1, 2**64)
_BAND_SEED = _U64(0x27D4EB2F165667C5)
_SHORT_TEXT_SALT = _U64(0x5DEECE66DA3B9F1)
_MAX_PROBES = 4096


def mix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise: spreads every input bit over every output bit."""
    x = values ^ (values >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x = x * _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


class _Powers:
    """BASE**i and BASE**-i modulo 2**64, grown on demand and shared by every batch."""

    def __init__(self) -> None:
        self.forward = np.ones(1, dtype=np.uint64)
        self.inverse = np.ones(1, dtype=np.uint64)

    def upto(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.forward) < length:
            size = max(length, 2 * len(self.forward))
            self.forward = _cumpow(_BASE, size)
            self.inverse = _cumpow(_BASE_INVERSE, size)
        return self.forward[:length], self.inverse[:length]


def _cumpow(base: int, size: int) -> np.ndarray:
    powers = np.empty(size, dtype=np.uint64)
    powers[0] = 1
    if size > 1:
        powers[1:] = np.cumprod(np.full(size - 1, base, dtype=np.uint64))
    return powers


_POWERS = _Powers()


class WordSpans:
    """A batch of normalised texts (words joined by single spaces) as one byte buffer with a polynomial prefix hash,
    so the hash of any run of whole words is two lookups and a multiply, for all runs at once."""

    def __init__(self, normalized: Sequence[bytes]) -> None:
        self.counts = np.array([text.count(b" ") + 1 if text else 0 for text in normalized], dtype=np.int64)
        data = np.frombuffer(b" ".join(normalized), dtype=np.uint8)
        powers, self._inverse = _POWERS.upto(len(data) + 1)
        self._prefix = np.zeros(len(data) + 1, dtype=np.uint64)
        np.cumsum(data * powers[: len(data)], out=self._prefix[1:])
        # Texts are joined by one space, and an empty text leaves two separators side by side: words are the
        # non-empty runs between spaces.
        spaces = np.flatnonzero(data == 32)
        starts = np.concatenate(([0], spaces + 1))
        ends = np.concatenate((spaces, [len(data)]))
        real = ends > starts
        self.starts, self.ends = starts[real], ends[real]
        self.owner = np.repeat(np.arange(len(normalized), dtype=np.int64), self.counts)
        self.first_word = np.cumsum(self.counts) - self.counts

    def hash_runs(self, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        """64-bit hashes of the word runs first[i]..last[i] (inclusive word indexes), independent of position."""
        begin, finish = self.starts[first], self.ends[last]
        polynomial = (self._prefix[finish] - self._prefix[begin]) * self._inverse[begin]
        return mix64(polynomial + (finish - begin).astype(np.uint64))


def ngram_hashes(spans: WordSpans, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every complete run of `size` words inside one text: (hashes, owning text, index of the run's first word
    within its text)."""
    span = len(spans.starts) - size + 1
    if span <= 0:
        empty = np.empty(0, np.int64)
        return np.empty(0, np.uint64), empty, empty
    first = np.arange(span, dtype=np.int64)
    first = first[spans.owner[first] == spans.owner[first + size - 1]]
    owners = spans.owner[first]
    return spans.hash_runs(first, first + size - 1), owners, first - spans.first_word[owners]


def shingle_hashes(
    texts: Sequence[str], size: int, salts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The hashes of every text's word `size`-shingles, concatenated, and the text each belongs to.

    A text with fewer than `size` words (but at least one) gets one shingle: the hash of its whole normalised text,
    so short texts are compared exactly instead of all sharing an empty signature. An empty text gets none.
    `salts` (one uint64 per text) are mixed in, e.g. to keep a user turn apart from the same assistant text.
    """
    if size < 1:
        raise ValueError("shingle size must be at least 1")
    spans = WordSpans([normalize_words_bytes(text) for text in texts])
    long_hashes, long_owners, _ = ngram_hashes(spans, size)
    short = np.flatnonzero((spans.counts > 0) & (spans.counts < size))
    short_first = spans.first_word[short]
    short_hashes = spans.hash_runs(short_first, short_first + spans.counts[short] - 1) ^ _SHORT_TEXT_SALT
    hashes = np.concatenate((long_hashes, short_hashes))
    owners = np.concatenate((long_owners, short))
    if salts is not None:
        hashes = mix64(hashes ^ salts[owners])
    return hashes, owners


def raw_signatures(hashes: np.ndarray, owners: np.ndarray, count: int, slots: int) -> np.ndarray:
    """One-permutation hashing: (count, slots) uint16 minima, EMPTY where a text put no shingle in a slot."""
    signatures = np.full(count * slots, EMPTY, dtype=np.uint16)
    bins = ((hashes >> _U64(32)) * _U64(slots)) >> _U64(32)
    values = (hashes & _U64(0xFFFF)).astype(np.uint16)
    np.minimum.at(signatures, owners * slots + bins.astype(np.int64), values)
    return signatures.reshape(count, slots)


def densify(signatures: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Optimal densification (Shrivastava 2017): an empty slot j takes the value of the first filled slot along a
    probe sequence that depends only on (j, attempt), the same for every text, so two signatures still agree in a
    slot with probability = their Jaccard similarity, without the correlated errors of filling from a neighbour.
    All-empty rows stay empty."""
    dense = signatures.copy()
    for start in range(0, len(signatures), chunk):
        _densify_rows(signatures[start : start + chunk], dense[start : start + chunk])
    return dense


def _densify_rows(raw: np.ndarray, out: np.ndarray) -> None:
    filled = raw != EMPTY
    rows, slots = np.nonzero(~filled & filled.any(axis=1)[:, None])
    width = raw.shape[1]
    attempt = 0
    while len(rows) and attempt < _MAX_PROBES:
        attempt += 1
        probe = (mix64(slots.astype(np.uint64) * _U64(0x9E3779B97F4A7C15) + _U64(attempt)) % _U64(width)).astype(np.int64)
        hit = filled[rows, probe]
        out[rows[hit], slots[hit]] = raw[rows[hit], probe[hit]]
        rows, slots = rows[~hit], slots[~hit]
    if len(rows):  # a row with almost every slot empty: fall back to its first filled slot (still deterministic)
        first = np.argmax(filled[rows], axis=1)
        out[rows, slots] = raw[rows, first]


def band_key(signatures: np.ndarray, band: int, rows: int) -> np.ndarray:
    """uint64 keys of one LSH band: two texts share band `band`'s key iff their slots band*rows..(band+1)*rows-1
    agree (up to a 2**-64 chance)."""
    block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
    key = np.full(len(signatures), _U64(band + 1)) * _BAND_SEED
    for row in range(rows):
        key = mix64(key ^ (block[:, row] + _U64(row << 16)))
    return key


def agreement(signatures: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Estimated Jaccard similarity of pairs (left[i], right[i]): the share of slots where they agree."""
    out = np.empty(len(left), dtype=np.float64)
    for start in range(0, len(left), chunk):
        a = signatures[left[start : start + chunk]]
        b = signatures[right[start : start + chunk]]
        out[start : start + chunk] = (a == b).mean(axis=1)
    return out


def lsh_parameters(threshold: float, slots: int, target_recall: float = 0.995) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= slots: the most rows per band (fewest chance candidates) that still make a
    pair at exactly `threshold` a candidate with probability >= target_recall. Candidates are verified afterwards,
    so erring towards recall costs time, not precision."""
    best = (slots, 1)
    for rows in range(1, slots + 1):
        bands = slots // rows
        if 1 - (1 - threshold**rows) ** bands >= target_recall:
            best = (bands, rows)
    return best

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

import hashlib
from collections.abc import Sequence
from functools import cache

import numpy as np

from distill.curation.textnorm import normalize_words_bytes

EMPTY = np.uint16(0xFFFF)
_U64 = np.uint64
_BASE = 0x100000001B3  # odd, so its powers are invertible modulo 2**64
_BASE_INVERSE = pow(_BASE, -1, 2**64)
_BAND_SEED = _U64(0x27D4EB2F165667C5)
_NGRAM_SEED = 0x165667B19E3779F9
_MAX_PROBES = 4096
_CHUNK_BYTES = 1 << 20
_DENSIFY_ROWS = 1024
"""Rows densified per pass: their flags (256 KB at 256 slots) stay in the CPU's cache while the probes gather from
them at random. With the first `_ROW_ATTEMPTS` over whole rows: 19.1 -> 10.4 µs per bench record's signature
against 32768 rows and every attempt slot by slot (the same values)."""
_ROW_ATTEMPTS = 3
_SPACE = 32


def digest64(data: bytes | str) -> int:
    """A 64-bit blake2b digest for values that become part of a signature (a short text's one shingle, a role's
    salt): kept apart from `distill.hashing.hash64` (XXH3, for keys) so near_dedup's estimates stay what the bench
    measured; it is taken per short text or per role, not per word."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def mix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise: spreads every input bit over every output bit."""
    x = values ^ (values >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x = x * _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


class _Powers:
    """BASE**i and BASE**-i modulo 2**64, grown on demand (a chunk's length; more only for a longer text)."""

    def __init__(self) -> None:
        self.forward = np.ones(1, dtype=np.uint64)
        self.inverse = np.ones(1, dtype=np.uint64)

    def upto(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.forward) < length:
            size = max(length, 2 * len(self.forward), _CHUNK_BYTES + 2)
            self.forward, self.inverse = _powers(_BASE, size), _powers(_BASE_INVERSE, size)
        return self.forward[:length], self.inverse[:length]


def _powers(base: int, size: int, block: int = 4096) -> np.ndarray:
    """base**0 .. base**(size-1) modulo 2**64, as an outer product of two short power tables (a long cumprod is
    several times slower)."""
    low = np.empty(block, dtype=np.uint64)
    low[0] = 1
    low[1:] = np.cumprod(np.full(block - 1, base, dtype=np.uint64))
    steps = -(-size // block)
    high = np.empty(steps, dtype=np.uint64)
    high[0] = 1
    high[1:] = np.cumprod(np.full(steps - 1, pow(base, block, 2**64), dtype=np.uint64))
    return np.multiply.outer(high, low).ravel()[:size]


_POWERS = _Powers()


def ngram_weights(size: int) -> np.ndarray:
    """Fixed odd multipliers, one per position in an n-gram: an n-gram hash is sum(word_hash[k] * weight[k])."""
    return mix64(np.arange(size, dtype=np.uint64) + _U64(_NGRAM_SEED)) | _U64(1)


class WordSpans:
    """A batch of normalised texts (words separated by spaces) as one byte buffer with a polynomial prefix hash,
    and a 64-bit hash per word, for all words at once: two lookups and a multiply each, no Python call per word."""

    def __init__(self, normalized: Sequence[bytes]) -> None:
        parts = [_word_hashes(normalized[start:stop]) for start, stop in _chunks(normalized)]
        self.hashes = np.concatenate([hashes for hashes, _ in parts]) if parts else np.empty(0, np.uint64)
        self.counts = np.concatenate([counts for _, counts in parts]) if parts else np.empty(0, np.int64)
        self.first_word = np.cumsum(self.counts) - self.counts
        self.owner = np.repeat(np.arange(len(normalized)), self.counts)


def _chunks(texts: Sequence[bytes]) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of about _CHUNK_BYTES each: small enough for the prefix and power tables to
    stay in cache and in a few MB, whatever the batch size."""
    ranges, start, size = [], 0, 0
    for index, text in enumerate(texts):
        size += len(text) + 1
        if size >= _CHUNK_BYTES:
            ranges.append((start, index + 1))
            start, size = index + 1, 0
    if start < len(texts):
        ranges.append((start, len(texts)))
    return ranges


def _word_hashes(normalized: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(every word's hash in order, each text's word count) for texts whose words are separated by spaces."""
    lengths = np.fromiter(map(len, normalized), dtype=np.int64, count=len(normalized))
    # One space before, between and after the texts, so every word is bordered by spaces.
    data = np.frombuffer(b" " + b" ".join(normalized) + b" ", dtype=np.uint8)
    text_starts = np.cumsum(lengths + 1) - lengths
    # Word starts and ends alternate among the positions where "is a word byte" changes.
    in_word = data != _SPACE
    edges = np.flatnonzero(in_word[1:] != in_word[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]
    counts = np.diff(np.searchsorted(starts, text_starts), append=len(starts))
    powers, inverse = _POWERS.upto(len(data) + 1)
    prefix = np.zeros(len(data) + 1, dtype=np.uint64)
    body = prefix[1:]
    body[:] = data
    body *= powers[: len(data)]
    np.cumsum(body, out=body)
    # sum(byte[k] * BASE**(k - start)) over the word: the same value wherever the word stands.
    polynomial = (prefix[ends] - prefix[starts]) * inverse[starts]
    return mix64(polynomial + (ends - starts).astype(np.uint64)), counts


def ngram_hashes(spans: WordSpans, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every complete run of `size` words inside one text: (hashes, owning text, index of the run's first word
    within its text)."""
    span = len(spans.hashes) - size + 1
    if span <= 0:
        empty = np.empty(0, np.int64)
        return np.empty(0, np.uint64), empty, empty
    weights = ngram_weights(size)
    combined = spans.hashes[:span] * weights[0]
    for k in range(1, size):
        combined += spans.hashes[k : k + span] * weights[k]
    first = np.flatnonzero(spans.owner[:span] == spans.owner[size - 1 :])
    owners = spans.owner[first]
    return mix64(combined[first]), owners, first - spans.first_word[owners]


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
    normalized = [normalize_words_bytes(text) for text in texts]
    spans = WordSpans(normalized)
    long_hashes, long_owners, _ = ngram_hashes(spans, size)
    short = np.flatnonzero((spans.counts > 0) & (spans.counts < size))
    short_hashes = np.fromiter(
        (digest64(b"short\x1f" + b" ".join(normalized[i].split())) for i in short.tolist()),
        dtype=np.uint64, count=len(short),
    )
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


def densify(signatures: np.ndarray) -> np.ndarray:
    """Optimal densification (Shrivastava 2017): an empty slot j takes the value of the first filled slot along a
    probe sequence that depends only on (j, attempt), the same for every text, so two signatures still agree in a
    slot with probability = their Jaccard similarity, without the correlated errors of filling from a neighbour.
    All-empty rows stay empty."""
    dense = signatures.copy()
    if signatures.size:
        probes = _probe_table(signatures.shape[1])
        for start in range(0, len(signatures), _DENSIFY_ROWS):
            _densify_rows(signatures[start : start + _DENSIFY_ROWS], dense[start : start + _DENSIFY_ROWS], probes)
    return dense


def _densify_rows(signatures: np.ndarray, dense: np.ndarray, probes: np.ndarray) -> None:
    count, width = signatures.shape
    filled_slots = signatures != EMPTY
    # Slots still empty, in rows that have any value.
    empty = ~filled_slots & filled_slots.any(axis=1, keepdims=True)
    # The first attempts over whole rows: attempt a probes the same slot probes[a, j] in every row, a gather within
    # each row that resolves most slots (a slot is filled with the chance the text fills slots) without building
    # index arrays.
    for attempt in range(_ROW_ATTEMPTS):
        column = probes[attempt]
        hit = empty & filled_slots[:, column]
        np.copyto(dense, signatures[:, column], where=hit)
        empty &= ~hit
    # The rest, slot by slot: flat indexes of the slots still empty, their slot and their row's offset.
    filled = filled_slots.ravel()
    raw, out = signatures.ravel(), dense.ravel()
    pending = np.flatnonzero(empty.ravel())
    slots = pending % width
    rows = pending - slots
    for attempt in range(_ROW_ATTEMPTS, _MAX_PROBES):
        if not len(pending):
            return
        source = rows + probes[attempt, slots]
        hit = filled[source]
        out[pending[hit]] = raw[source[hit]]
        miss = ~hit
        pending, slots, rows = pending[miss], slots[miss], rows[miss]
    if len(pending):  # a row with almost every slot empty: its first filled slot (still deterministic)
        out[pending] = raw[rows + np.argmax(filled.reshape(count, width)[rows // width], axis=1)]


@cache
def _probe_table(width: int) -> np.ndarray:
    """(attempt, slot) -> the slot probed: a fixed table, the same for every text and run."""
    cells = np.arange(_MAX_PROBES * width, dtype=np.uint64).reshape(_MAX_PROBES, width)
    return (mix64(cells + _U64(0x9E3779B97F4A7C15)) % _U64(width)).astype(np.intp)


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

"""distill's own stable hashes: the same bytes give the same value on every machine and run.

Python's built-in `hash()` is salted per process and engines hash differently, so neither may decide what is
kept, split or named.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable
from typing import Any

import orjson
import xxhash


HASH_CHUNK_BYTES = 512 << 10
"""How much of a file is read at a time to hash it: a chunk that stays in a core's L2 cache while it is copied in and
hashed. sha256 + XXH3 of the 1e6 bench's 1.7 GB took 2.04 s of CPU in 8 MiB chunks, 1.25 in 1 MiB, 1.21 in 512 KiB
(bench/RESULTS.md)."""


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Any, chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """The sha256 of a file's bytes, read in chunks (any size)."""
    return _file_digest(path, hashlib.sha256(), chunk_bytes)


def file_content_hash(path: Any, chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """What the plan key holds of an input, to tell a changed one on resume: XXH3-128 of the file's bytes, taken
    over its `content_pieces` (`ContentHash`). Not the manifest's sha256: it is taken before the map can start, and
    XXH3 adds ~0.02 s to reading the 1e6 bench's 1.7 GB where sha256 adds ~1.0 s (bench/RESULTS.md)."""
    with open(path, "rb") as handle:
        return hashed_stream(handle, ContentHash(os.fstat(handle.fileno()).st_size), chunk_bytes).hexdigest()


SPLIT_CONTENT_BYTES = 16 << 20
"""A file larger than this is hashed (and cut into shards) as two halves, each on a thread of its own."""


def content_pieces(size: int) -> list[tuple[int, int]]:
    """The byte ranges a file of `size` bytes is read in by the threads that cut it: two halves (the first a whole
    number of HASH_CHUNK_BYTES) above SPLIT_CONTENT_BYTES, else the whole. The cut of the 1e6 bench's 1.7 GB, which
    the map waits for, took 0.17 s so against 0.33 s in one pass."""
    if size <= SPLIT_CONTENT_BYTES:
        return [(0, size)]
    middle = size // 2 // HASH_CHUNK_BYTES * HASH_CHUNK_BYTES
    return [(0, middle), (middle, size)]


class ContentHash:
    """`file_content_hash`, updated with a file's bytes in order: each of `content_pieces(size)` has its own
    XXH3-128 and the value is the XXH3-128 of their digests and the size, so the pieces may also be hashed apart,
    at once, and `combined`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ends = [end for _, end in content_pieces(size)]
        self.digests = [xxhash.xxh3_128() for _ in self.ends]
        self.piece = 0
        self.offset = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.piece == len(self.ends) - 1:  # the last piece takes the rest, whatever the file's size now
                self.digests[self.piece].update(view)
                self.offset += len(view)
                return
            take = min(len(view), self.ends[self.piece] - self.offset)
            self.digests[self.piece].update(view[:take])
            self.offset += take
            view = view[take:]
            if self.offset == self.ends[self.piece]:
                self.piece += 1

    def hexdigest(self) -> str:
        return combined([digest.digest() for digest in self.digests], self.size)


def combined(piece_digests: list[bytes], size: int) -> str:
    """A file's `file_content_hash` from its pieces' XXH3-128 digests, in order."""
    return xxhash.xxh3_128_hexdigest(b"".join(piece_digests) + size.to_bytes(8, "little"))


def _file_digest(path: Any, digest: Any, chunk_bytes: int) -> str:
    with open(path, "rb") as handle:
        return hashed_stream(handle, digest, chunk_bytes).hexdigest()


def hashed_stream(handle: Any, digest: Any, chunk_bytes: int = HASH_CHUNK_BYTES) -> Any:
    """`digest` updated with the rest of an open binary file, read in chunks; the digest itself, to go on with."""
    while chunk := handle.read(chunk_bytes):
        digest.update(chunk)
    return digest


hash64: Callable[[bytes | str], int] = xxhash.xxh3_64_intdigest
"""A 64-bit unsigned integer digest for keys compared for equality or spread over partitions (record ids, group
keys, exact_dedup's texts): XXH3, a fixed algorithm that gives the same value on every platform and version (a str
is hashed as its UTF-8 bytes). Taken once or more per record, so it is xxhash, not blake2b: 0.1 against 1.2 µs for
355 bytes, the map 8% faster at 1e5 records (bench/RESULTS.md); and xxhash's own function, not one wrapping it:
~0.1 µs less a call, 3-4 calls a record."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces: the one serialisation every content hash is taken over."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def canonical_content_id(prefix: str, canonical: bytes) -> str:
    """An example id: the task's prefix and 16 hex digits of sha256 over the canonical JSON of its content
    (`canonical_json`), which the caller keeps (`make_example` writes the line from the same bytes)."""
    return f"{prefix}-{sha256_hex(canonical)[:16]}"


def unit_interval(*parts: str) -> float:
    """A platform-independent number in [0, 1) from the given parts (used by the split)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: the form exact duplicates are compared in."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())

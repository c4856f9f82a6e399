"""distill's own stable hashes: the same bytes give the same value on every machine and run.

Python's built-in `hash()` is salted per process and engines hash differently, so neither may decide what is
kept, split or named.
"""

from __future__ import annotations

import hashlib
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
    """XXH3-128 of a file's bytes, in hex: what the plan key holds of an input, to tell a changed one on resume.
    Not the manifest's sha256: it is taken before the map can start, and XXH3 adds ~0.02 s to reading the 1e6
    bench's 1.7 GB where sha256 adds ~1.0 s (bench/RESULTS.md)."""
    return _file_digest(path, xxhash.xxh3_128(), chunk_bytes)


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

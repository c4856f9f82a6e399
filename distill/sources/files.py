"""Reading input files: which files a path names, and their bytes whatever the compression.

One place for every reader (file sources, the lakehouse, eval sets): gzip, zstd, bz2 and xz are recognised by their
magic bytes (so a misnamed file still reads) as well as by suffix; a binary file of no known compression, or a
compressed file that is cut short or corrupt, is a one-line `DistillError`, never decoded as text.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import io
import lzma
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from distill.errors import DistillError
from distill.hashing import file_sha256
from distill.output.files import shown_path
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin
from distill.sources.json_document import BOM

SNIFF_BYTES = 8192

# Magic bytes -> compression name.
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2", ".xz": "xz"}


def with_compression(suffixes: tuple[str, ...]) -> tuple[str, ...]:
    """The suffixes, each also followed by every compression suffix: `.jsonl` -> `.jsonl`, `.jsonl.gz`, ..."""
    return (*suffixes, *(s + c for s in suffixes for c in COMPRESSION_SUFFIXES))


def strip_compression(name: str) -> str:
    """`HumanEval.jsonl.gz` -> `HumanEval.jsonl`."""
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def row_label(origin: Origin) -> str:
    """`origin.label()` without a compression suffix: ids derived from it stay the same when a file is compressed."""
    if origin.path is None:
        return origin.label()
    return msgspec.structs.replace(origin, path=strip_compression(origin.path)).label()


def compression_of(path: Path, key: str) -> str | None:
    """The file's compression by its magic bytes (None: plain). A suffix that promises a compression the bytes do
    not have, or a binary file of no known compression, is a DistillError naming `key`."""
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as error:
        raise DistillError(f"{key}: cannot read {shown_path(path)} ({error.strerror or error})") from None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    promised = COMPRESSION_SUFFIXES.get(path.suffix)
    if promised is not None:
        raise DistillError(f"{key}: {shown_path(path)} is named as {promised} but its bytes are not {promised}")
    if b"\x00" in head:
        raise DistillError(f"{key}: {shown_path(path)} is a binary file of no known compression (gzip, zstd, bz2, xz), not text")
    return None


def _open(path: Path, compression: str | None) -> IO[bytes]:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    if compression == "zstd":
        return io.BufferedReader(_ZstdFrames(path.open("rb")), 1 << 20)  # buffered for line iteration
    return path.open("rb")


ZSTD_READ_BYTES = 1 << 17
"""Compressed bytes decompressed at once: 128 KiB (1 MiB gave 8x larger outputs and read 2x slower)."""


class _ZstdFrames(io.RawIOBase):
    """A zstd file's frames, decompressed one after another. A file that ends inside a frame (cut short) raises
    ZstdError, as gzip, bz2 and xz readers raise EOFError: zstandard's `stream_reader` ends there without a word, the
    rest of the file silently lost."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw, self._decompressor, self._error = raw, zstandard.ZstdDecompressor(), zstandard.ZstdError
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False  # bytes of the current frame were fed and it has not ended
        self._pending, self._offset = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._offset >= len(self._pending):
            chunk = self._raw.read(ZSTD_READ_BYTES)
            if not chunk:
                if self._in_frame:
                    raise self._error("the file ends inside a frame: cut short")
                return 0
            self._pending, self._offset = self._decompressed(chunk), 0
        size = min(len(buffer), len(self._pending) - self._offset)
        buffer[:size] = memoryview(self._pending)[self._offset : self._offset + size]
        self._offset += size
        return size

    def _decompressed(self, data: bytes) -> bytes:
        out = []
        while True:
            out.append(self._frame.decompress(data))
            self._in_frame = not self._frame.eof
            if self._in_frame:
                break
            data = self._frame.unused_data  # the next frame's start, when this chunk holds it
            self._frame = self._decompressor.decompressobj()
            if not data:
                break
        return out[0] if len(out) == 1 else b"".join(out)

    def close(self) -> None:
        self._raw.close()
        super().close()


SIZE_SAMPLE_BYTES = 8 << 20
RAW_SAMPLE_BYTES = 2 << 20


def text_bytes_estimate(path: Path, compression: str | None) -> int:
    """About how many bytes the file holds once decompressed (exact for a small file), from the ratio over its
    first few MB: the plan sizes partitions by the text a shard yields, not by its compressed bytes. Falls back to
    the file's size when the file cannot be read (reading it later reports why)."""
    size = path.stat().st_size
    if compression is None:
        return size
    try:
        with path.open("rb") as raw, _decompressing(raw, compression) as stream:
            text, chunk = 0, b""
            # Decompressors read their input ahead in large chunks: the ratio is only measured once enough
            # compressed bytes were consumed for that read-ahead not to matter (a small file is read whole).
            while (text < SIZE_SAMPLE_BYTES or raw.tell() < RAW_SAMPLE_BYTES) and (chunk := stream.read(1 << 20)):
                text += len(chunk)
            if not chunk:
                return text
            return int(size * text / max(raw.tell(), 1))
    except (*_STREAM_ERRORS, ValueError):
        return size


def _decompressing(raw: IO[bytes], compression: str) -> Any:
    """A decompressing reader over an open binary file, leaving the file open."""
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return {"bz2": bz2.BZ2File, "xz": lzma.LZMAFile}[compression](raw)


# What a truncated or corrupt stream raises while it is read, per library.
_STREAM_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError)
try:
    import zstandard as _zstandard

    _STREAM_ERRORS = (*_STREAM_ERRORS, _zstandard.ZstdError)
except ImportError:  # pragma: no cover - a base dependency
    pass


@contextmanager
def open_input(path: Path, key: str) -> Iterator[IO[bytes]]:
    """The file's decompressed bytes as a binary stream. Errors while opening or reading it (a truncated or corrupt
    compressed file) become one DistillError naming `key` and the file."""
    compression = compression_of(path, key)
    try:
        with _open(path, compression) as handle:
            yield handle
    except _STREAM_ERRORS as error:
        what = f"{compression} file" if compression else "file"
        raise DistillError(f"{key}: {shown_path(path)}: unreadable {what} ({error})") from None


def read_bytes(path: Path, key: str) -> bytes:
    with open_input(path, key) as handle:
        return handle.read()


def _listed(directory: Path, suffixes: tuple[str, ...], unreadable: list[str]) -> list[Path]:
    """Files under `directory` (recursively) with one of `suffixes`; a sub-directory that cannot be listed is
    added to `unreadable` (Path.rglob would skip it silently)."""
    def refused(error: OSError) -> None:
        unreadable.append(f"{shown_path(error.filename)}/ ({error.strerror})")

    found = []
    for folder, _, names in os.walk(directory, onerror=refused):
        found.extend(Path(folder, name) for name in names if name.endswith(suffixes))
    return _regular_files(found, unreadable)


def _regular_files(paths: list[Path], unreadable: list[str]) -> list[Path]:
    """The regular files of `paths` (a symbolic link counts as what it points at), in sorted order. A directory is
    passed over; anything else (a broken symbolic link, a FIFO, a socket) is added to `unreadable`: skipping it
    would drop its rows without a word."""
    files = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif path.is_symlink() and not path.exists():
            unreadable.append(f"{shown_path(path)} (a symbolic link to nothing)")
        elif not path.is_dir():
            unreadable.append(f"{shown_path(path)} (not a regular file)")
    return sorted(files)


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except OSError as error:
        return f"{shown_path(path)} ({error.strerror})"


def resolve_files(pattern: str, key: str, suffixes: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """(root, files in sorted order) for a file, a directory (searched recursively for `suffixes`) or a glob. Every
    input that cannot be read (a file or a sub-directory without permission) is named up front, in one error."""
    path = Path(pattern).expanduser()
    unreadable: list[str] = []
    if path.is_file():
        root, files = path.parent, [path]
    elif path.is_dir():
        root, files = path, _listed(path, suffixes, unreadable)
        if not files and not unreadable:
            raise DistillError(f"{key}: no {'/'.join(suffixes)} files under {pattern}")
    elif glob.has_magic(pattern):
        files = _regular_files([Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True)], unreadable)
        if not files and not unreadable:
            raise DistillError(f"{key}: the glob {pattern} matches no file")
        root = Path(os.path.commonpath([str(p.parent) for p in files])) if files else path.parent
    else:
        raise DistillError(f"{key}: no such file, directory or glob: {pattern}")
    unreadable.extend(problem for problem in map(_unreadable, files) if problem)
    if unreadable:
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        raise DistillError(f"{key}: cannot read {', '.join(unreadable[:5])}{more}")
    return root, files


def relative_name(path: Path, root: Path) -> str:
    """The file relative to the source root, as origins and ids show it (a name that is not UTF-8 percent-encoded)."""
    return shown_path(path.relative_to(root).as_posix())


def numbered_lines(
    path: Path, origin_path: str, inputs: list[dict[str, Any]], key: str = "source.path", **entry: Any
) -> Iterator[tuple[bytes, Origin]]:
    """The file's non-blank lines (decompressed) with their origin (a UTF-8 byte order mark before the first is not
    part of it); once read, appends {path, sha256 (of the file on disk), rows, **entry} to `inputs`."""
    compression = compression_of(path, key)
    digest = hashlib.sha256() if compression is None else None
    rows = 0
    with open_input(path, key) as handle:
        for number, line in enumerate(handle, start=1):
            if digest is not None:
                digest.update(line)
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM):]
            if not line.strip():
                continue
            rows += 1
            yield line, Origin(path=origin_path, line=number)
    sha256 = digest.hexdigest() if digest is not None else file_sha256(path)
    inputs.append({"path": shown_path(path.resolve()), "sha256": sha256, "rows": rows, **entry})


def decode_line(line: bytes, origin: Origin, row_id: str) -> Any:
    """One JSON line decoded, or the quarantine row saying why not (`invalid_utf8`, `invalid_json`)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as bad_bytes:
            text = line.decode("utf-8", errors="replace")
            return QuarantineRow(
                "parse", Reason.invalid_utf8, (f"byte {bad_bytes.start}: {bad_bytes.reason}",),
                row_id, origin, text.rstrip("\r\n"),
            )
        return QuarantineRow("parse", Reason.invalid_json, (str(error),), row_id, origin, text.rstrip("\r\n"))

"""Spill files: the plan's intermediate data between map, decide, reduce and merge.

A spill is a sequence of frames, each one pickled batch (a list of values), optionally zstd-compressed: pickle keeps
the records' own classes without a second validation pass, and a batch per frame keeps the call count low. Spills are
written under a temporary name and renamed when closed, so a spill with its final name is always whole.
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import zstandard

FRAME_HEADER = struct.Struct("<Q")
FRAME_ITEMS = 2048
"""A batch is written in frames of at most this many items, so a reader (the merge reads one frame of every
partition at once) holds a bounded amount whatever the batch's size."""
FRAME_BYTES = 256 * 1024
"""...and of at most about this many bytes (pickled): the merge holds one frame of each of its streams at a time,
so this bounds its memory per stream whatever the items' size."""
MERGE_HELD_BYTES = 64 << 20
"""What the frames a merge holds at once come to, whatever the input. A merge holds a frame of every partition's
spill (the quarantine's: of every shard's too), and both counts grow with the input, so the spills a merge reads
have frames of FRAME_BYTES only up to 256 streams, and smaller beyond (`merge_frame_bytes`). 1e7 bench records make
166 partitions at the default budget; 1e6 in 2,000 partitions peaked at 1,403 MiB with frames of FRAME_BYTES, 532
MiB so (bench/RESULTS.md)."""
MIN_FRAME_BYTES = 4 << 10
"""Frames no smaller than this, however many streams: below it a frame's pickled keys and header outweigh its lines
(a merge of over 16,384 streams holds more than MERGE_HELD_BYTES)."""
PROBE_ITEMS = 16
"""How many of a spill's first items are pickled alone to size its frames."""
BY_PLACE = itemgetter(0)
"""The sort key of a spill entry that is a tuple led by its place in a file (example lines, quarantine rows)."""
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COPY_BYTES = 1 << 20
"""The chunk `SpillWriter.append_frames` copies another spill in."""
COMPRESSION_LEVEL = 1  # measured: level 1 keeps up with the map; higher levels cost more CPU than the disk they save


def merge_frame_bytes(streams: int) -> int:
    """The frame size of spills a merge reads `streams` of at once (a dataset file's: one a partition; the
    quarantine's: one a shard and one a partition): FRAME_BYTES, or less once `streams` frames of it would hold more
    than MERGE_HELD_BYTES."""
    return max(MIN_FRAME_BYTES, min(FRAME_BYTES, MERGE_HELD_BYTES // max(streams, 1)))


class SpillWriter:
    """Appends batches to one spill file, in frames of about `frame_bytes`; `close()` makes it visible under its
    final name."""

    def __init__(self, path: Path, *, compress: bool, frame_bytes: int = FRAME_BYTES) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.handle = self.temporary.open("wb")
        self.compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL) if compress else None
        self.batches = 0
        # Frames of many items are pickled into this buffer, reused from frame to frame: `pickle.dumps` grows a new
        # bytes object by `realloc` for each one (~5% of a reduce partition, bench/RESULTS.md).
        self.pickled = io.BytesIO()
        self.items_per_frame = FRAME_ITEMS
        self.frame_bytes = frame_bytes
        self.sized = False

    def write(self, batch: list[Any]) -> None:
        if len(batch) == 1:  # one item (a batch's keys, a shard's quarantine rows): one frame, nothing to size
            self.write_frame(batch)
            return
        if not self.sized and batch:
            # Large items (example lines, quarantined records) go fewer to a frame. The first few items, pickled
            # alone, say how many: pickling a whole first frame to learn it (2,048 example lines, ~11 MB) cost one
            # frame pickled twice per spill, ~0.6 GB of copying at 1e6 bench records.
            probe = batch[:PROBE_ITEMS]
            item_bytes = len(pickle.dumps(probe, protocol=pickle.HIGHEST_PROTOCOL)) / len(probe)
            self.items_per_frame = max(1, min(FRAME_ITEMS, int(self.frame_bytes / item_bytes)))
            self.sized = True
        start = 0
        while start < len(batch):
            chunk = batch[start : start + self.items_per_frame]
            size = self._pickle(chunk)
            # Items that grew well beyond the first ones: fewer per frame from here on, this frame pickled again.
            if size > self.frame_bytes * 2 and len(chunk) > 1:
                self.items_per_frame = max(1, len(chunk) * self.frame_bytes // size)
                continue
            start += len(chunk)
            self._frame_pickled(size)

    def write_bytes(self, data: bytes) -> None:
        """`data` as one frame, as it is (a reader of this spill knows its layout)."""
        self._frame(data)

    def append_frames(self, path: Path) -> None:
        """Every frame of the spill at `path`, as it is, after this spill's so far (frames carry their own length and
        compression, so spills join end to end)."""
        with path.open("rb") as spilled:
            shutil.copyfileobj(spilled, self.handle, COPY_BYTES)

    def write_frame(self, items: list[Any]) -> None:
        """`items` as one frame, however many bytes they pickle to (the caller sized them)."""
        self._frame_pickled(self._pickle(items))

    def _pickle(self, items: list[Any]) -> int:
        """Pickles `items` into the reused buffer; the bytes it took."""
        self.pickled.seek(0)
        pickle.Pickler(self.pickled, protocol=pickle.HIGHEST_PROTOCOL).dump(items)
        return self.pickled.tell()

    def _frame_pickled(self, size: int) -> None:
        with self.pickled.getbuffer() as whole, whole[:size] as data:
            self._frame(data)

    def _frame(self, data: Any) -> None:
        if self.compressor is not None:
            data = self.compressor.compress(data)
        self.handle.write(FRAME_HEADER.pack(len(data)))
        self.handle.write(data)
        self.batches += 1

    def close(self) -> None:
        self.handle.close()
        os.replace(self.temporary, self.path)

    def abandon(self) -> None:
        self.handle.close()
        self.temporary.unlink(missing_ok=True)


def frames(items: Iterable[Any]) -> Iterator[list[Any]]:
    """Items in lists of `FRAME_ITEMS`, made as they are written: a spill of many rows is never all in memory."""
    frame: list[Any] = []
    for item in items:
        frame.append(item)
        if len(frame) == FRAME_ITEMS:
            yield frame
            frame = []
    if frame:
        yield frame


def write_spill(path: Path, batches: Iterable[list[Any]], *, compress: bool, frame_bytes: int = FRAME_BYTES) -> None:
    writer = SpillWriter(path, compress=compress, frame_bytes=frame_bytes)
    try:
        for batch in batches:
            writer.write(batch)
    except BaseException:
        writer.abandon()
        raise
    writer.close()


def read_batches(path: Path, loads: Callable[[bytes], Any] = pickle.loads) -> Iterator[list[Any]]:
    """The spill's batches in the order written, each unpickled by `loads`; a missing spill is empty (a shard that
    sent nothing there)."""
    if not path.exists():
        return
    decompressor = zstandard.ZstdDecompressor()
    with path.open("rb") as handle:
        while (data := read_frame(handle, decompressor)) is not None:
            yield loads(data)


def read_frame(handle: Any, decompressor: zstandard.ZstdDecompressor) -> bytes | None:
    """The next frame's bytes, decompressed when the frame was compressed; None at the spill's end."""
    header = handle.read(FRAME_HEADER.size)
    if not header:
        return None
    (size,) = FRAME_HEADER.unpack(header)
    data = handle.read(size)
    if data[:4] == ZSTD_MAGIC:  # zstd's magic number: this frame was compressed
        data = decompressor.decompress(data)
    return data


def read_values(path: Path, loads: Callable[[bytes], Any] = pickle.loads) -> Iterator[Any]:
    for batch in read_batches(path, loads):
        yield from batch


Place = tuple[int, int]
"""Where a value lies in a spill: its frame's offset in the file and its index in that frame."""


def write_line_spill(
    path: Path, entries: Iterable[tuple[Any, Any, bytes]], *, compress: bool, frame_bytes: int = FRAME_BYTES
) -> None:
    """A spill of a file's lines in the making (example lines, quarantine rows) for a merge (`LineCursor`): (key,
    note, line) entries, in the order given, in frames of about `frame_bytes` of lines (at most FRAME_ITEMS). A frame
    is the pickled keys, notes (what the merge notes of each line: a quarantine row's reason and record id, None for
    a dataset line) and the lines' ends, followed by the lines back to back: the merge slices each line out of the
    frame it read (a `memoryview`), where a pickled bytes object per line cost an allocation and a copy each. A
    killed 1e6 run's train file merged in 2.12-2.27 CPU-seconds against 2.31-2.37, its quarantine in 1.75-1.85
    against 1.80-2.19 (bench/RESULTS.md, "Lines a frame at a time")."""
    writer = SpillWriter(path, compress=compress, frame_bytes=frame_bytes)
    keys: list[Any] = []
    notes: list[Any] = []
    ends: list[int] = []
    lines: list[bytes] = []
    size = 0

    def frame() -> None:
        writer.write_bytes(b"".join([pickle.dumps((keys, notes, ends), protocol=pickle.HIGHEST_PROTOCOL), *lines]))

    try:
        for key, note, line in entries:
            keys.append(key)
            notes.append(note)
            lines.append(line)
            size += len(line)
            ends.append(size)
            if size >= frame_bytes or len(keys) >= FRAME_ITEMS:
                frame()
                keys, notes, ends, lines, size = [], [], [], [], 0
        if keys:
            frame()
    except BaseException:
        writer.abandon()
        raise
    writer.close()


class LineCursor:
    """A spill `write_line_spill` wrote, line by line from `place` on, for a merge that records where it stands and
    may resume there: `next()` gives (key, note, line) and the line's place (its frame's offset and its index in the
    frame), the line a `memoryview` into the frame's bytes. `release(place)` gives the file's bytes before that
    place's frame back to the filesystem (`punch_hole`): what a merge has consumed need not hold disk and page cache
    until the run ends."""

    def __init__(self, path: Path, place: Place = (0, 0)) -> None:
        self.path = path
        self.handle = path.open("r+b") if path.exists() else None  # writable: punching a hole needs it
        self.offset, self.index = place
        self.released = 0
        # The spill is whole and its holes keep its size: its block and size, taken once, serve every release.
        status = os.fstat(self.handle.fileno()) if self.handle is not None else None
        self.block, self.size = (status.st_blksize, status.st_size) if status is not None else (1, 0)
        self.keys: list[Any] = []
        self.notes: list[Any] = []
        self.ends: list[int] = []
        self.data = memoryview(b"")
        self.decompressor = zstandard.ZstdDecompressor()
        if self.handle is not None:
            self.handle.seek(self.offset)
            self._read_frame()

    def _read_frame(self) -> bool:
        """Reads the frame at the handle's position: False at the file's end."""
        assert self.handle is not None
        self.offset = self.handle.tell()
        data = read_frame(self.handle, self.decompressor)
        if data is None:
            self.keys, self.notes, self.ends, self.data = [], [], [], memoryview(b"")
            return False
        self.keys, self.notes, self.ends = pickle.loads(data)  # the pickle ends where the lines begin
        self.data = memoryview(data)[len(data) - self.ends[-1] :]
        return True

    def next(self) -> tuple[Any, Place] | None:
        """The next (key, note, line) and its place, or None at the spill's end."""
        while self.index >= len(self.keys):
            if self.handle is None or not self._read_frame():
                return None
            self.index = 0
        index = self.index
        self.index += 1
        start = self.ends[index - 1] if index else 0
        line = self.data[start : self.ends[index]]
        return (self.keys[index], self.notes[index], line), (self.offset, index)

    def end(self) -> Place:
        """The place after the spill's last value (a resumed merge finds nothing left there)."""
        return (self.handle.tell() if self.handle is not None else 0, 0)

    def release(self, place: Place, at_least: int = 1) -> None:
        """Gives back the bytes of every frame before `place`'s, in whole filesystem blocks: a block is freed only
        when all of it lies in the hole, so the hole ends at the last block boundary before the frame (the file's
        end: all of it). Nothing while less than `at_least` bytes would be freed: a caller that releases often
        makes fewer, larger holes."""
        if self.handle is None:
            return
        block, size = self.block, self.size
        end = place[0] - place[0] % block if place[0] < size else size + (-size) % block
        if end - self.released >= at_least:
            punch_hole(self.handle.fileno(), self.released, end - self.released)
            self.released = end

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2
_fallocate = getattr(ctypes.CDLL(None, use_errno=True), "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Frees a file's bytes in [offset, offset + length) on disk and in the page cache, its size unchanged (Linux's
    `fallocate(FALLOC_FL_PUNCH_HOLE)`); a no-op where the system or filesystem cannot (the bytes are freed with the
    file)."""
    if _fallocate is not None and length > 0:
        _fallocate(fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, offset, length)


def plain_spill_bytes(paths: Iterable[Path]) -> int | None:
    """The bytes of these spills (missing ones count 0), or None when one holds a compressed frame: its size then
    says nothing of what its values hold. A resumed run may find spills an earlier run compressed, whatever its own
    setting. Each frame of a spill is compressed or none is, so its first one tells."""
    total = 0
    for path in paths:
        try:
            with path.open("rb") as handle:
                head = handle.read(FRAME_HEADER.size + len(ZSTD_MAGIC))
                total += os.fstat(handle.fileno()).st_size
        except FileNotFoundError:
            continue
        if head[FRAME_HEADER.size :] == ZSTD_MAGIC:
            return None
    return total


def write_marker(path: Path, value: Any) -> None:
    """A completion marker holding the finished task's result; written last, atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(temporary, path)


def read_marker(path: Path) -> Any | None:
    """The result a completion marker holds, or None when the task has not finished."""
    if not path.exists():
        return None
    return pickle.loads(path.read_bytes())

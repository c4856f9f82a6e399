"""A JSONL file merged from sorted spills, each spill's bytes given back as they are merged, resumable where it stopped.

The merge is the run's last copy: every example line and quarantine row passes from a reduce spill into its file.
Holding every spill until the run's end made the merge's disk and page cache the spills' and the files' at once (1e6
bench records: 1.7 GB of each), and where freed memory goes back to a VM's host, every page of the files was fresh
memory, which costs more to fault in than the bytes cost to write (bench/RESULTS.md, "Spills given back as they are
merged"). So every CHECKPOINT_BYTES of the file the merge records where it stands, then punches out of each spill what
it has given; those pages serve the file's next bytes. What a spill gave is gone, so a run killed while merging
resumes from the last checkpoint: the file is cut back to it and its sha256 taken again over what it holds.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from distill.errors import DistillError
from distill.hashing import hashed_stream
from distill.kill_hooks import hooked_phase, kill_hook
from distill.output.files import WRITE_BLOCK_BYTES, HashedBlocks, cannot_write, shown_path
from distill.plan.spill import LineCursor, Place, read_marker, write_marker

CHECKPOINT_BYTES = 16 << 20
"""How much of the file is written between checkpoints: about what the spills hold on to beyond what they gave, and
what a resumed merge writes again at most. At 1e6 bench records the merge took 2.4-2.9 s at 16 MiB, 2.7-2.9 at
64 MiB, 3.6 holding every spill to the end (bench/RESULTS.md)."""
RELEASE_SHARE = 4
"""At a checkpoint a spill gives its bytes back once it has given at least 1/RELEASE_SHARE of the checkpoint
interval since it last did (4 MiB). Many spills each move little between two checkpoints (1e7 bench records: 166
partitions, ~40 KB of compressed spill each), and a hole punched per spill and checkpoint cost a third of the merge:
53 s without giving anything back, 71 s giving back at every checkpoint, 57 s so (bench/RESULTS.md)."""
TEST_CHECKPOINT_BYTES = 16 << 10
"""The checkpoint interval while a test kills the run in its merge (`DISTILL_TEST_KILL_AFTER=merge:N`): the tests'
files are a few hundred KiB."""


class Gatherer(Protocol):
    def line(self, entry: tuple[Any, Any, memoryview]) -> Any:
        """The JSONL line a spill's (key, note, line) entry puts in the file (`write_line_spill`); notes what the
        caller keeps of it (samples, counts). Pickled with each checkpoint, so a resumed merge goes on with what it
        had noted."""


G = TypeVar("G", bound=Gatherer)


@dataclass
class Checkpoint:
    written: int
    """Bytes of the partial file that stand; a resumed merge cuts the rest."""
    rows: int
    places: list[Place]
    """Where each spill's next entry lies (the end of a spill that has given everything)."""
    gatherer: Any
    entry: dict[str, Any] | None = None
    """The manifest entry, once the file is whole."""


def merge_into_jsonl(path: Path, spills: Sequence[Path], work: Path, gatherer: G) -> tuple[dict[str, Any], G]:
    """Writes `path` from the lines of `spills` (`write_line_spill`'s, each sorted by key) in key order, ties in
    spill order, as `heapq.merge` would; returns the manifest entry ({path, sha256, rows}) and the gatherer.
    `work`: where the partial file and its checkpoint wait, in the run's working directory."""
    partial, marker = work / f"{path.name}.partial", work / f"{path.name}.checkpoint"
    state: Checkpoint | None = read_marker(marker)
    if state is not None and state.entry is not None:  # whole before the interruption; maybe not yet renamed
        if partial.exists():
            os.replace(partial, path)
        return state.entry, state.gatherer
    if state is None:
        state = Checkpoint(0, 0, [(0, 0)] * len(spills), gatherer)
    elif not partial.exists():
        raise DistillError(
            f"resume=true: {shown_path(partial)} is gone, and the spills it was merged from were given back as it "
            "was written; start a new run (without resume)"
        )
    cursors = [LineCursor(spill, place) for spill, place in zip(spills, state.places)]
    try:
        entry = _merge(path, partial, marker, cursors, state)
    except OSError as error:
        raise cannot_write(path, error) from None
    finally:
        for cursor in cursors:
            cursor.close()
    return entry, state.gatherer


def _merge(path: Path, partial: Path, marker: Path, cursors: list[LineCursor], state: Checkpoint) -> dict[str, Any]:
    interval = TEST_CHECKPOINT_BYTES if hooked_phase() == "merge" else CHECKPOINT_BYTES
    block_limit = min(WRITE_BLOCK_BYTES, interval)
    gatherer = state.gatherer
    heads = []
    for index, cursor in enumerate(cursors):
        got = cursor.next()
        if got is not None:
            heads.append((got[0][0], index, got[0], got[1]))
    heapq.heapify(heads)
    with partial.open("r+b" if state.written else "wb") as handle:
        digest = hashlib.sha256()
        if state.written:
            handle.truncate(state.written)  # what was written after the last checkpoint is written again
            hashed_stream(handle, digest)
        with HashedBlocks(handle, digest) as blocks:
            block: list[Any] = []  # the lines: slices of their spills' frames
            block_bytes = 0
            checkpointed = state.written
            while heads:
                _, index, entry, _ = heads[0]
                line = gatherer.line(entry)
                block.append(line)
                block_bytes += len(line)
                state.rows += 1
                got = cursors[index].next()
                if got is None:
                    heapq.heappop(heads)
                else:
                    heapq.heapreplace(heads, (got[0][0], index, got[0], got[1]))
                if block_bytes >= block_limit:
                    blocks.write(block)
                    state.written += block_bytes
                    block, block_bytes = [], 0
                    if state.written - checkpointed >= interval:
                        _checkpoint(handle, marker, cursors, heads, state, interval // RELEASE_SHARE)
                        checkpointed = state.written
            blocks.write(block)
            state.written += block_bytes
        handle.flush()
        state.entry = {"path": path.name, "sha256": digest.hexdigest(), "rows": state.rows}
    write_marker(marker, state)
    os.replace(partial, path)
    for cursor in cursors:
        cursor.release(cursor.end())
    return state.entry


def _checkpoint(
    handle: Any, marker: Path, cursors: list[LineCursor], heads: list[Any], state: Checkpoint, release_bytes: int
) -> None:
    """Records where the merge stands, then gives back what each spill gave before it, where that is at least
    `release_bytes` more than it last gave back."""
    handle.flush()
    state.places = [cursor.end() for cursor in cursors]
    for _, index, _, place in heads:
        state.places[index] = place
    write_marker(marker, state)
    for cursor, place in zip(cursors, state.places):
        cursor.release(place, release_bytes)
    _CHECKPOINTS[0] += 1
    kill_hook("merge", _CHECKPOINTS[0])  # test-only: a kill once the spills gave their bytes back


_CHECKPOINTS = [0]
"""This process's checkpoints so far, for the test-only kill hook."""

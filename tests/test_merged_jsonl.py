"""The merge into a JSONL file gives each spill's bytes back as it goes, and resumes where it was stopped."""

from __future__ import annotations

import hashlib
import heapq
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.output import merged_jsonl
from distill.output.merged_jsonl import merge_into_jsonl
from distill.plan import spill as spill_module
from distill.plan.spill import SpillCursor, read_values, write_spill

SPILLS = 4
ROWS_PER_SPILL = 3000


def sorted_spills(folder: Path) -> list[Path]:
    """Spills of (key, line) entries, each sorted, their keys interleaved; lines of ~100 bytes, frames of 64 rows."""
    paths = []
    for spill in range(SPILLS):
        entries = [(key, b'{"n":%d,"pad":"%s"}\n' % (key, b"x" * 80)) for key in range(spill, SPILLS * ROWS_PER_SPILL, SPILLS)]
        path = folder / f"{spill}.spill"
        write_spill(path, (entries[i : i + 64] for i in range(0, len(entries), 64)), compress=False)
        paths.append(path)
    return paths


class Stopped(Exception):
    """The merge stopped midway, as a kill or a full disk would stop it."""


@dataclass
class Lines:
    """Keeps the keys it saw: a resumed merge must go on with what it had seen before it stopped."""

    keys: list[int] = field(default_factory=list)

    def line(self, entry: tuple[int, bytes]) -> bytes:
        self.keys.append(entry[0])
        return entry[1]


@dataclass
class LinesUntil(Lines):
    """Stops the merge at its `stop_after`th line; its checkpoints keep what it saw as plain `Lines`."""

    stop_after: int = 0

    def line(self, entry: tuple[int, bytes]) -> bytes:
        if len(self.keys) == self.stop_after:
            raise Stopped
        return super().line(entry)

    def __reduce__(self):
        return Lines, (list(self.keys),)


def expected_file(spills: list[Path]) -> bytes:
    return b"".join(line for _, line in heapq.merge(*(read_values(p) for p in spills), key=lambda e: e[0]))


@pytest.fixture
def spills(tmp_path, monkeypatch) -> list[Path]:
    """The spills, with a checkpoint every 64 KiB of the file (1.3 MB of lines), and the merge's work folder."""
    monkeypatch.setattr(merged_jsonl, "CHECKPOINT_BYTES", 64 << 10)
    (tmp_path / "work").mkdir()
    return sorted_spills(tmp_path)


def test_a_merged_file_is_the_spills_in_key_order_and_the_spills_are_given_back(tmp_path, spills):
    want = expected_file(spills)
    work = tmp_path / "work"
    entry, lines = merge_into_jsonl(tmp_path / "out.jsonl", spills, work, Lines())
    data = (tmp_path / "out.jsonl").read_bytes()
    assert data == want
    assert entry == {"path": "out.jsonl", "sha256": hashlib.sha256(want).hexdigest(), "rows": SPILLS * ROWS_PER_SPILL}
    assert lines.keys == list(range(SPILLS * ROWS_PER_SPILL))
    assert not list(work.glob("*.partial"))
    for spill in spills:  # every byte given back, the size kept
        assert spill.stat().st_size > 0
        assert spill.stat().st_blocks == 0


def test_a_merge_stopped_midway_resumes_from_its_checkpoint_to_the_same_file(tmp_path, spills):
    want = expected_file(spills)
    work = tmp_path / "work"
    out = tmp_path / "out.jsonl"
    with pytest.raises(Stopped):
        merge_into_jsonl(out, spills, work, LinesUntil(stop_after=7000))
    assert not out.exists()
    checkpoint = pickle.loads((work / "out.jsonl.checkpoint").read_bytes())
    assert 0 < checkpoint.rows < 7000
    # What the merge had checkpointed is gone from the spills: only a resume from the checkpoint can finish it.
    assert sum(p.stat().st_blocks for p in spills) * 512 < sum(p.stat().st_size for p in spills) / 2
    resumed = Lines()
    entry, lines = merge_into_jsonl(out, spills, work, resumed)
    assert out.read_bytes() == want
    assert entry["sha256"] == hashlib.sha256(want).hexdigest()
    assert entry["rows"] == SPILLS * ROWS_PER_SPILL
    # The gatherer went on from the checkpoint's, not from the one handed in.
    assert lines is not resumed
    assert lines.keys == list(range(SPILLS * ROWS_PER_SPILL))
    # Called again after the file was whole (a run killed before its manifest): the same entry, nothing rewritten.
    again, _ = merge_into_jsonl(out, spills, work, Lines())
    assert again == entry


def test_a_resume_whose_partial_file_is_gone_says_so_in_one_line(tmp_path, spills):
    work = tmp_path / "work"
    with pytest.raises(Stopped):
        merge_into_jsonl(tmp_path / "out.jsonl", spills, work, LinesUntil(stop_after=7000))
    (work / "out.jsonl.partial").unlink()
    with pytest.raises(DistillError, match=r"out.jsonl.partial is gone.*start a new run"):
        merge_into_jsonl(tmp_path / "out.jsonl", spills, work, Lines())


def test_a_spill_cursor_goes_on_from_a_place_after_the_bytes_before_it_were_given_back(tmp_path):
    (spill,) = sorted_spills(tmp_path)[:1]
    values = list(read_values(spill))
    cursor = SpillCursor(spill)
    for _ in range(1000):
        _, place = cursor.next()
    cursor.release(place)
    cursor.close()
    assert spill.stat().st_blocks * 512 < spill.stat().st_size
    resumed = SpillCursor(spill, place)
    rest = []
    while (got := resumed.next()) is not None:
        rest.append(got[0])
    resumed.close()
    assert rest == values[999:]


def test_spills_that_move_little_between_checkpoints_are_given_back_in_fewer_larger_holes(tmp_path, monkeypatch):
    # 32 spills and a checkpoint every 64 KiB of the file: each spill moves ~2 KiB between two checkpoints. A hole per
    # spill and checkpoint (the cost at 1e7 records, 166 spills) is what the merge must not make: a spill gives its
    # bytes back once it has given a quarter of the interval (16 KiB), and everything at the end.
    monkeypatch.setattr(merged_jsonl, "CHECKPOINT_BYTES", 64 << 10)
    holes: dict[int, list[int]] = {}
    punch = spill_module.punch_hole

    def recorded(fd: int, offset: int, length: int) -> None:
        holes.setdefault(fd, []).append(length)
        punch(fd, offset, length)

    monkeypatch.setattr(spill_module, "punch_hole", recorded)
    paths = []
    for spill in range(32):
        entries = [(key, b'{"n":%d,"pad":"%s"}\n' % (key, b"x" * 80)) for key in range(spill, 32 * 400, 32)]
        paths.append(tmp_path / f"{spill}.spill")
        write_spill(paths[-1], (entries[i : i + 16] for i in range(0, len(entries), 16)), compress=False)
    (tmp_path / "work").mkdir()
    want = expected_file(paths)
    merge_into_jsonl(tmp_path / "out.jsonl", paths, tmp_path / "work", Lines())
    assert (tmp_path / "out.jsonl").read_bytes() == want
    assert all(path.stat().st_blocks == 0 for path in paths)
    assert len(holes) == 32
    for lengths in holes.values():  # each spill's holes before its last are at least a quarter of the interval
        assert len(lengths) >= 2 and all(length >= 16 << 10 for length in lengths[:-1])

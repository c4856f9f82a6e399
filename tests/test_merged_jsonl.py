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
from distill.plan.spill import LineCursor, write_line_spill

SPILLS = 4
ROWS_PER_SPILL = 3000


def line_entries(spill: int, spills: int, rows: int) -> list[tuple[int, None, bytes]]:
    """Spill `spill`'s (key, note, line) entries of `spills` whose keys interleave: lines of ~100 bytes."""
    return [(key, None, b'{"n":%d,"pad":"%s"}\n' % (key, b"x" * 80)) for key in range(spill, spills * rows, spills)]


def sorted_spills(folder: Path, monkeypatch) -> list[Path]:
    """Spills of lines, each sorted, their keys interleaved; frames of 64 lines."""
    monkeypatch.setattr(spill_module, "FRAME_ITEMS", 64)
    paths = []
    for spill in range(SPILLS):
        path = folder / f"{spill}.spill"
        write_line_spill(path, line_entries(spill, SPILLS, ROWS_PER_SPILL), compress=False)
        paths.append(path)
    return paths


class Stopped(Exception):
    """The merge stopped midway, as a kill or a full disk would stop it."""


@dataclass
class Lines:
    """Keeps the keys it saw: a resumed merge must go on with what it had seen before it stopped."""

    keys: list[int] = field(default_factory=list)

    def line(self, entry: tuple[int, None, memoryview]) -> memoryview:
        self.keys.append(entry[0])
        return entry[2]


@dataclass
class LinesUntil(Lines):
    """Stops the merge at its `stop_after`th line; its checkpoints keep what it saw as plain `Lines`."""

    stop_after: int = 0

    def line(self, entry: tuple[int, None, memoryview]) -> memoryview:
        if len(self.keys) == self.stop_after:
            raise Stopped
        return super().line(entry)

    def __reduce__(self):
        return Lines, (list(self.keys),)


def spilled_lines(path: Path) -> list[tuple[int, bytes]]:
    """A spill's (key, line) pairs, read by a cursor from its start."""
    cursor, pairs = LineCursor(path), []
    while (got := cursor.next()) is not None:
        (key, _, line), _ = got
        pairs.append((key, bytes(line)))
    cursor.close()
    return pairs


def expected_file(spills: list[Path]) -> bytes:
    return b"".join(line for _, line in heapq.merge(*(spilled_lines(p) for p in spills), key=lambda e: e[0]))


@pytest.fixture
def spills(tmp_path, monkeypatch) -> list[Path]:
    """The spills, with a checkpoint every 64 KiB of the file (1.3 MB of lines), and the merge's work folder."""
    monkeypatch.setattr(merged_jsonl, "CHECKPOINT_BYTES", 64 << 10)
    (tmp_path / "work").mkdir()
    return sorted_spills(tmp_path, monkeypatch)


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
        merge_into_jsonl(out, spills, work, LinesUntil(stop_after=8000))
    assert not out.exists()
    checkpoint = pickle.loads((work / "out.jsonl.checkpoint").read_bytes())
    assert 0 < checkpoint.rows < 8000
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
        merge_into_jsonl(tmp_path / "out.jsonl", spills, work, LinesUntil(stop_after=8000))
    (work / "out.jsonl.partial").unlink()
    with pytest.raises(DistillError, match=r"out.jsonl.partial is gone.*start a new run"):
        merge_into_jsonl(tmp_path / "out.jsonl", spills, work, Lines())


def test_a_line_cursor_goes_on_from_a_place_after_the_bytes_before_it_were_given_back(tmp_path, monkeypatch):
    (spill,) = sorted_spills(tmp_path, monkeypatch)[:1]
    pairs = spilled_lines(spill)
    cursor = LineCursor(spill)
    for _ in range(1000):
        _, place = cursor.next()
    cursor.release(place)
    cursor.close()
    assert spill.stat().st_blocks * 512 < spill.stat().st_size
    resumed = LineCursor(spill, place)
    rest = []
    while (got := resumed.next()) is not None:
        (key, note, line), _ = got
        rest.append((key, bytes(line)))
    resumed.close()
    assert rest == pairs[999:]


def test_a_spill_of_lines_holds_them_a_frame_at_a_time_after_their_keys_and_ends(tmp_path):
    """Lines go to a spill in frames of about `frame_bytes` (or FRAME_ITEMS lines): each frame the pickled keys, notes
    and ends of its lines, then the lines back to back; a cursor gives every line back, in order, with its key and
    note, as a slice of its frame."""
    entries = [(key, ("reason", f"r{key}"), b'{"n":%d}\n' % key + b"x" * (key % 300)) for key in range(500)]
    path = tmp_path / "lines.spill"
    write_line_spill(path, entries, compress=False, frame_bytes=1000)
    with path.open("rb") as handle:
        frames = []
        while (data := spill_module.read_frame(handle, None)) is not None:
            frames.append(data)
    assert len(frames) > 10
    for data in frames:
        keys, notes, ends = pickle.loads(data)
        lines = [entry[2] for entry in entries if entry[0] in set(keys)]
        assert data.endswith(b"".join(lines)) and ends[-1] == len(b"".join(lines))
        assert notes == [("reason", f"r{key}") for key in keys]
    for data in frames[:-1]:  # a frame closes with the line that takes it to frame_bytes
        _, _, ends = pickle.loads(data)
        assert ends[-1] >= 1000 > (ends[-2] if len(ends) > 1 else 0)
    cursor = LineCursor(path)
    got = []
    while (item := cursor.next()) is not None:
        (key, note, line), _ = item
        assert isinstance(line, memoryview)
        got.append((key, note, bytes(line)))
    assert got == entries
    assert LineCursor(tmp_path / "missing.spill").next() is None


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
    monkeypatch.setattr(spill_module, "FRAME_ITEMS", 16)
    paths = []
    for spill in range(32):
        paths.append(tmp_path / f"{spill}.spill")
        write_line_spill(paths[-1], line_entries(spill, 32, 400), compress=False)
    (tmp_path / "work").mkdir()
    want = expected_file(paths)
    merge_into_jsonl(tmp_path / "out.jsonl", paths, tmp_path / "work", Lines())
    assert (tmp_path / "out.jsonl").read_bytes() == want
    assert all(path.stat().st_blocks == 0 for path in paths)
    assert len(holes) == 32
    for lengths in holes.values():  # each spill's holes before its last are at least a quarter of the interval
        assert len(lengths) >= 2 and all(length >= 16 << 10 for length in lengths[:-1])


def test_compressed_line_spills_merge_into_the_same_file(tmp_path, monkeypatch):
    monkeypatch.setattr(spill_module, "FRAME_ITEMS", 64)
    plain, packed = [], []
    for spill in range(SPILLS):
        for folder, compress, paths in ((tmp_path / "plain", False, plain), (tmp_path / "packed", True, packed)):
            folder.mkdir(exist_ok=True)
            paths.append(folder / f"{spill}.spill")
            write_line_spill(paths[-1], line_entries(spill, SPILLS, 500), compress=compress)
    assert sum(p.stat().st_size for p in packed) < sum(p.stat().st_size for p in plain) / 2
    (tmp_path / "work").mkdir()
    entry, lines = merge_into_jsonl(tmp_path / "out.jsonl", packed, tmp_path / "work", Lines())
    assert (tmp_path / "out.jsonl").read_bytes() == expected_file(plain)
    assert lines.keys == list(range(SPILLS * 500))


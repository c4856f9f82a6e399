"""The partitioned plan gives the same bytes whatever the workers, partitions, shard size or interruption."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xxhash
from helpers import REPO, compose_config, read_jsonl, run_cli, write_jsonl

from distill import hashing
from distill.config import build_settings
from distill.executor import local
from distill.executor.local import beside
from distill.grouping import Group
from distill.hashing import hash64
from distill.output.writers import LineFiles
from distill.plan import prepare, reduce, spill
from distill.plan.context import Layout, PlanContext
from distill.plan.decide import in_order
from distill.plan.map import LineLabels, labels_at, row_labels
from distill.quarantine import QuarantineRow
from distill.record import Origin, Record
from distill.runner import run
from distill.sources import jsonl
from distill.sources.jsonl import JsonlParams, JsonlSource
from distill.tasks.base import Example
from distill.tasks.sft import SftParams, SftTask
from lakehouse_fixture import FIXTURE

DATA_FILES = ("quarantine.jsonl", "stats.json")
COVERAGE = REPO / "examples" / "coverage"


def run_dir(output_dir: Path, overrides: list[str]) -> dict[str, bytes]:
    """Runs in-process and returns every data file's bytes (not the manifest, which records when it ran)."""
    config = compose_config(overrides)
    run(build_settings(config), output_dir, config=config)
    files = {}
    for path in sorted(output_dir.rglob("*")):
        if path.is_file() and path.name != "manifest.json" and ".hydra" not in path.parts:
            data = path.read_bytes()
            if path.name == "report.html":  # shows the config's hash, and the config names the executor settings
                data = re.sub(rb"<tr><th>config sha256</th>.*?</tr>", b"", data)
            files[path.relative_to(output_dir).as_posix()] = data
    assert not list(output_dir.glob(".distill-work")), "the work directory outlived the run"
    assert not [p for p in output_dir.rglob("*.tmp")], "a temporary file outlived the run"
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A generated corpus with exact and near copies, eval-set leaks and secrets (bench/generate.py), plus bad
    rows and a repeated id."""
    out = tmp_path_factory.mktemp("corpus")
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "generate.py"), "--records", "1500", "--out", str(out)],
        check=True, capture_output=True,
    )
    logs = out / "logs.jsonl"
    lines = logs.read_bytes().splitlines(keepends=True)
    bad = [b"{not json\n", b'{"id": "bad-type", "reward": "high"}\n', b"\xff\xfe\n", lines[10]]
    logs.write_bytes(b"".join(lines[:700] + bad + lines[700:]))
    return out


SAMPLE_TASKS = {
    "sft": [],
    "preference paired": ["task=preference"],
    "preference unpaired": ["task=preference", "task.form=unpaired"],
    "preference ranked": ["task=preference", "task.form=ranked"],
    "rollout": ["task=rollout"],
    "rag": ["task=rag"],
    "sft no split": ["split=none"],
}


@pytest.fixture(autouse=True)
def phases_in_processes_of_their_own(monkeypatch):
    """Small inputs are decided and their quarantine merged in the driver; here, with two workers, both run in a
    process of their own as a large input's do, so the same-bytes checks cover that path too (the one-worker
    variant covers the driver's)."""
    monkeypatch.setattr(local, "SMALL_RUN_RECORDS", 0)


def test_a_failing_block_stops_the_process_beside_it_and_a_failing_process_fails_the_block():
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the dataset merge failed"):
        with beside(time.sleep, (60,), process=True):
            raise RuntimeError("the dataset merge failed")
    assert time.monotonic() - started < 30, "the process beside the block was waited for, not stopped"
    for process in (True, False):
        with pytest.raises(ValueError, match="invalid literal"):
            with beside(int, ("not a number",), process=process) as result:
                result()


VARIANTS = {
    "one worker, one partition": ["executor.workers=1", "executor.partitions=1"],
    # ... with every spill compressed, as a run at 1e7 records writes them: the same bytes.
    "two workers, seven partitions, small shards, compressed spills": [
        "executor.workers=2", "executor.partitions=7", "executor.shard_mb=0.02", "executor.compress_spills=true",
    ],
}


def assert_same_across_variants(tmp_path: Path, overrides: list[str]) -> dict[str, bytes]:
    outputs = [run_dir(tmp_path / name.replace(" ", "_"), [*overrides, *variant]) for name, variant in VARIANTS.items()]
    assert outputs[0].keys() == outputs[1].keys()
    for name in outputs[0]:
        assert outputs[0][name] == outputs[1][name], f"{name} differs between variants"
    assert set(DATA_FILES) <= outputs[0].keys()
    return outputs[0]


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_the_bundled_sample_gives_the_same_bytes_for_any_workers_and_partitions(tmp_path, task):
    assert_same_across_variants(tmp_path, SAMPLE_TASKS[task])


@pytest.mark.parametrize("task", [["+experiment=lakehouse_instruction"], ["task=preference_category"], ["task=rag"]])
def test_the_lakehouse_fixture_gives_the_same_bytes_for_any_workers_and_partitions(tmp_path, task):
    assert_same_across_variants(tmp_path, ["source=lakehouse", f"source.root={FIXTURE}", "split=none", *task])


def test_coverage_packages_are_the_same_for_any_workers_and_partitions(tmp_path):
    files = assert_same_across_variants(tmp_path, [
        f"source.path={COVERAGE / 'candidates.jsonl'}", "task=coverage", f"task.instances={COVERAGE / 'instances.json'}",
    ])
    assert any(name.startswith("coverage/") for name in files)


@pytest.mark.parametrize("curation", [[], ["curation=thorough"]])
@pytest.mark.parametrize("task", [[], ["task=preference"], ["task=rollout"]])
def test_a_corpus_with_copies_leaks_and_bad_rows_gives_the_same_bytes(tmp_path, corpus, curation, task):
    evals = [f"++curation.steps.decontaminate.eval_sets=[{corpus / 'evals' / 'heldout.jsonl'}]"] if curation else []
    files = assert_same_across_variants(tmp_path, [f"source.path={corpus / 'logs.jsonl'}", *curation, *evals, *task])
    reasons = {json.loads(line)["reason"] for line in files["quarantine.jsonl"].splitlines()}
    assert {"invalid_json", "invalid_utf8", "schema_violation", "duplicate"} <= reasons
    if curation:
        assert {"near_duplicate", "contaminated"} <= reasons


@pytest.mark.parametrize("task", [[], ["task=preference"], ["task=rollout"], ["task=rag"]])
def test_a_partition_reduced_a_few_records_at_a_time_gives_the_bytes_of_one_reduced_whole(
    tmp_path, corpus, task, monkeypatch
):
    """The reduce takes a partition's groups a slice at a time (`group_slices`); slices of a group or two give
    what one slice of every group gives: lines, quarantine order, stats and counts."""
    overrides = [f"source.path={corpus / 'logs.jsonl'}", "executor.workers=1", "executor.partitions=1", *task]
    whole = run_dir(tmp_path / "whole", overrides)
    monkeypatch.setattr(reduce, "SLICE_RECORDS", 3)
    sliced = run_dir(tmp_path / "sliced", overrides)
    assert whole.keys() == sliced.keys()
    for name in whole:
        assert whole[name] == sliced[name], f"{name} differs when reduced in slices"


def test_slices_hold_whole_groups_of_about_the_size_asked_and_there_is_always_one():
    groups = [Group(f"g{i}", [object()] * size, [object()] * (i % 2)) for i, size in enumerate([1, 5, 2, 2, 1, 7])]
    slices = list(reduce.group_slices(groups, 4))
    assert [[g.key for g in taken] for taken in slices] == [["g0", "g1"], ["g2", "g3"], ["g4", "g5"]]
    assert list(reduce.group_slices([], 4)) == [[]]


def test_a_partitions_lines_are_spilled_in_file_order_when_its_slices_interleave(tmp_path):
    """A slice's examples are in file order, but an example's place is its first record's, not its group's: a
    later slice may hold an example that goes first. The partition's spill is in file order all the same."""
    layout = Layout.of(tmp_path)
    layout.make(1, [0])
    lines = LineFiles(SftTask(SftParams(kind="sft")), tmp_path, layout, "jsonl", compress=False)

    def example(example_id: str, day: int) -> Example:
        record = Record(id=f"r-{example_id}", created_at=f"2024-01-{day:02d}T00:00:00Z")
        return Example({"id": example_id, "messages": []}, (record,), record.id)

    partition = lines.open_partition(0)
    partition.add({"train": [example("b", 2), example("d", 4)]}, {})
    partition.add({"train": [example("a", 1), example("c", 3)]}, {})
    partition.close()
    cursor = spill.LineCursor(layout.examples("train", 0))
    spilled = []
    while (got := cursor.next()) is not None:
        (_, _, line), _ = got
        spilled.append(json.loads(bytes(line)))
    assert [line["id"] for line in spilled] == ["a", "b", "c", "d"]


def test_a_pool_reduces_the_partitions_with_the_most_spilled_bytes_first(tmp_path):
    """The phase then ends on the small ones: a worker left without work waits for less. Ties keep the order given;
    a partition no shard sent anything is last."""
    layout = Layout.of(tmp_path)
    layout.make(5, [0])
    sizes = {(0, 0): 10, (1, 0): 300, (1, 1): 5, (2, 1): 400, (4, 0): 10}
    for (partition, shard), size in sizes.items():
        layout.part(partition, shard).write_bytes(b"x" * size)

    class Context:
        pass

    ctx = Context()
    ctx.layout = layout
    assert local.largest_first(ctx, [0, 1, 2, 3, 4], [0, 1]) == [2, 1, 0, 4, 3]
    assert local.largest_first(ctx, [4, 3, 0], [0, 1]) == [4, 0, 3]


def test_a_lines_sort_key_orders_as_its_first_records_created_at_and_id_then_its_own_id():
    """The key a line is spilled and merged under is flat (microseconds, not a datetime) but orders lines as
    (first record's (created_at, id), line id) does: a line of no record first, an undated record's at the epoch,
    microseconds and dates before 1970 counted, ties on time broken by record id, then by line id."""
    times = [None, "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999999Z", "2024-01-01T00:00:00.000001Z",
             "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.000001Z", "2023-12-31T23:59:59Z"]
    examples = [Example({"id": f"sft-{line}", "messages": []}, (), "none") for line in "za"]
    for index, created_at in enumerate(times):
        record = Record(id=f"r{index % 3}", created_at=created_at)
        examples += [Example({"id": f"sft-{line}{index}", "messages": []}, (record,), record.id) for line in "ba"]
    nested = sorted(examples, key=lambda e: (e.records[0].order_key() if e.records else (), e.id))
    assert sorted(examples, key=Example.sort_key) == nested
    assert [e.id for e in nested[:3]] == ["sft-a", "sft-z", "sft-a2"]


@pytest.mark.parametrize("dedup", [
    [], ["++curation.steps.exact_dedup.scope=record", "++curation.steps.near_dedup.scope=record"],
])
def test_keys_decided_in_buckets_give_what_one_pass_over_all_keys_gives(tmp_path, corpus, dedup, caplog):
    """A memory budget too small for one step's keys makes the decide phase split them into buckets (by record
    partition, then by the bucket that decides them): the same drops, the same figures, the same bytes."""
    overrides = [
        f"source.path={corpus / 'logs.jsonl'}", "curation=thorough", "executor.workers=1",
        f"++curation.steps.decontaminate.eval_sets=[{corpus / 'evals' / 'heldout.jsonl'}]", *dedup,
    ]
    whole = tmp_path / "whole"
    bucketed = tmp_path / "bucketed"
    expected = run_dir(whole, [*overrides, "executor.partitions=1"])
    with caplog.at_level("INFO", logger="distill.plan.decide"):
        found = run_dir(bucketed, [*overrides, "executor.partitions=7", "executor.memory_gb=0.0002", "executor.shard_mb=0.05"])
    assert "decide exact_dedup: in 6 buckets" in caplog.text
    assert "decide decontaminate: in 6 buckets" in caplog.text
    # near_dedup builds its units (conversations, or records) one partition bucket at a time, then clusters them all.
    unit = "record" if dedup else "conversation"
    assert int(re.search(rf"decide near_dedup: by {unit}, in (\d+) buckets", caplog.text)[1]) > 1
    assert int(re.search(r"decide semantic_dedup: by record, in (\d+) buckets", caplog.text)[1]) > 1
    assert found == expected
    stages = [json.loads((out / "manifest.json").read_text())["stages"] for out in (whole, bucketed)]
    assert stages[0] == stages[1]
    first_hits = next(s for s in stages[0] if s["step"] == "decontaminate")["first_hits"]
    assert first_hits, "the corpus leaks eval items: the first hits must be there to compare"


def test_exact_dedups_buckets_decided_two_at_a_time_give_what_one_pass_gives(tmp_path, corpus, caplog):
    """With more than one worker, a decide in buckets hands every other bucket of exact_dedup to a process beside it
    (the run's other workers wait for the reduce meanwhile), in twice as many buckets: the same bytes as one pass."""
    overrides = [f"source.path={corpus / 'logs.jsonl'}", "executor.shard_mb=0.05"]
    expected = run_dir(tmp_path / "whole", [*overrides, "executor.workers=1", "executor.partitions=1"])
    with caplog.at_level("INFO", logger="distill.executor.local"):
        found = run_dir(tmp_path / "beside", [
            *overrides, "executor.workers=2", "executor.partitions=7", "executor.memory_gb=0.0002",
        ])
    beside = re.search(r"decide exact_dedup: (\d+) of (\d+) buckets in a process beside the decide's", caplog.text)
    assert beside, caplog.text
    assert int(beside[1]) >= 1 and int(beside[2]) >= 2 * int(beside[1])
    assert found == expected


def test_the_quarantine_is_in_origin_order_and_the_ledger_closes(tmp_path, corpus):
    out = tmp_path / "out"
    config = compose_config([f"source.path={corpus / 'logs.jsonl'}", "executor.partitions=5", "executor.shard_mb=0.05"])
    result = run(build_settings(config), out, config=config)
    rows = read_jsonl(out / "quarantine.jsonl")
    keys = [(r["origin"]["path"], r["origin"]["line"], r["record_id"] or "") for r in rows]
    assert keys == sorted(keys)
    counts = result.manifest["counts"]
    assert counts["input_rows"] == counts["exported_records"] + counts["quarantined_rows"] == 1504
    repeated = [r for r in rows if r["reason"] == "duplicate" and r["step"] == "parse"]
    assert len(repeated) == 1 and "already read at logs.jsonl:11" in repeated[0]["errors"][0]


def test_a_file_is_cut_into_a_multiple_of_the_workers_and_reads_as_a_whole(tmp_path):
    """Equal shards keep every worker busy to the end: a file that 64 MB shards would cut into 3 pieces is cut
    into 4 for 2 workers, and its shards read the same rows, with the same line numbers, as the whole file."""
    path = write_jsonl(tmp_path / "logs.jsonl", [{"id": f"r{i}", "text": "word " * (i % 7 + 1)} for i in range(300)])
    target = path.stat().st_size // 3 + 1
    source = JsonlSource(JsonlParams(kind="jsonl", path=str(path)))
    assert len(source.shards(target)) == 3
    shards = source.shards(target, multiple=2)
    assert len(shards) == 4
    read = [parsed for shard in shards for parsed in source.read_shard(shard)]
    whole = list(JsonlSource(JsonlParams(kind="jsonl", path=str(path))).read())
    assert [(r.id, r.origin.line) for r in read] == [(r.id, r.origin.line) for r in whole]
    assert [s.first_line for s in shards] == sorted({s.first_line for s in shards})


def random_line_bytes(rng, most_pieces):
    """Up to `most_pieces` blank, JSON, long, CRLF-ended and newline-less pieces: the edge cases of cutting lines."""
    pieces = [b"\n", b"{}\n", b"x" * rng.randint(0, 40) + b"\n", b"\r\n", b"tail"]
    return b"".join(rng.choice(pieces) for _ in range(rng.randint(0, most_pieces)))


def test_a_byte_range_reads_the_lines_that_begin_in_it_whatever_the_read_block(tmp_path, monkeypatch):
    # The reference: a binary file's own line iteration, from `start`, stopping at the first line at `stop` or after.
    def lines_of(path, start, stop, first_line):
        with path.open("rb") as handle:
            handle.seek(start)
            for number, line in enumerate(handle, start=first_line):
                if stop is not None and start >= stop:
                    return
                start += len(line)
                yield number, line.removesuffix(b"\n"), line.endswith(b"\n")

    rng = random.Random(7)
    path = tmp_path / "lines.jsonl"
    for _ in range(200):
        data = random_line_bytes(rng, 30)
        path.write_bytes(data)
        monkeypatch.setattr(jsonl, "RANGE_READ_BYTES", rng.choice([1, 2, 5, 64, 1 << 20]))
        start = rng.choice([0] + [i + 1 for i, byte in enumerate(data) if byte == ord("\n")])
        stop = rng.choice([None, rng.randint(0, len(data) + 2)])
        assert list(jsonl.range_lines(path, start, stop, 3)) == list(lines_of(path, start, stop, 3))


def test_a_file_is_cut_after_the_first_line_end_at_or_past_each_target_with_its_line_numbers_and_hash(
    tmp_path, monkeypatch
):
    # The reference walks the file's lines: a range ends after the first line whose newline is at or past the next
    # multiple of the target, unless nothing follows it; the hash is XXH3-128 over the XXH3-128 of each half (one
    # whole file when small) and the size.
    def cuts_of(data, target):
        cuts, end, step = [(0, 1)], 0, max(target, 1)
        next_target = step
        for number, line in enumerate(io.BytesIO(data), start=1):
            end += len(line)
            if line.endswith(b"\n") and end - 1 >= next_target and end < len(data):
                cuts.append((end, number + 1))
            while next_target <= end - 1:
                next_target += step
        return cuts

    def hash_of(data, halves_from):
        middle = len(data) // 2 // hashing.HASH_CHUNK_BYTES * hashing.HASH_CHUNK_BYTES
        pieces = [data] if len(data) <= halves_from else [data[:middle], data[middle:]]
        digests = b"".join(xxhash.xxh3_128_digest(piece) for piece in pieces)
        return xxhash.xxh3_128_hexdigest(digests + len(data).to_bytes(8, "little"))

    rng = random.Random(11)
    path = tmp_path / "lines.jsonl"
    for _ in range(300):
        data = random_line_bytes(rng, 40)
        path.write_bytes(data)
        monkeypatch.setattr(jsonl, "CUT_CHUNK_BYTES", rng.choice([1, 3, 64, 8 << 20]))
        monkeypatch.setattr(hashing, "HASH_CHUNK_BYTES", rng.choice([1, 2, 16]))
        halves_from = rng.choice([0, 20, 1 << 30])
        monkeypatch.setattr(hashing, "SPLIT_CONTENT_BYTES", halves_from)
        target = rng.randint(0, len(data) + 2)
        expected = hash_of(data, halves_from)
        assert jsonl.cut_points(path, target) == (expected, cuts_of(data, target))
        assert hashing.file_content_hash(path, chunk_bytes=rng.choice([1, 5, 1 << 20])) == expected


def test_a_file_cut_into_ranges_has_its_sha256_in_the_manifest_fresh_or_resumed(tmp_path, corpus):
    """The plan keys a cut file by its XXH3 and takes its sha256 only after the map: the manifest still holds the
    sha256 of the file on disk, whether the run mapped it or resumed after its map."""
    logs = corpus / "logs.jsonl"
    overrides = [f"source.path={logs}", "executor.workers=2", "executor.shard_mb=0.2"]
    expected = hashlib.sha256(logs.read_bytes()).hexdigest()
    config = compose_config(overrides)
    result = run(build_settings(config), tmp_path / "fresh", config=config)
    (entry,) = result.manifest["inputs"]
    assert entry["sha256"] == expected and entry["rows"] == len(logs.read_bytes().splitlines())
    killed_then_resumed(tmp_path, overrides, "reduce:1")
    resumed = json.loads((tmp_path / "killed-reduce-1" / "manifest.json").read_bytes())
    assert resumed["inputs"][0]["sha256"] == expected


@pytest.mark.parametrize(
    "line",
    [
        b'{"id": "a", "role": "user", "text": "hello", "created_at": "2026-01-01T00:00:00Z", "metadata": {"k": [1, 2.5]}}',
        b'{"id": 7, "text": "numeric id", "reward": 0.5, "embedding": [0.1, 0.2]}',
        b'{"id": "a", "metadata": {"x": NaN}}',
        b'{"id": "a", "metadata": {"x": -Infinity}}',
        b'{"id": "a", "tool_calls": [{"arguments": {"x": 1e400}}]}',
        b'{"id": "a", "embedding": [1e400]}',
        b'{"id": "a", "origin": {"path": "forged"}}',
        b'{"id": "a", "unknown_key": 1}',
        b'{"text": "no id"}',
        b'{"id": "", "text": "empty id"}',
        b'{"id": "a", "rank": 1.0}',
        b'{"id": "a", "category": "shiny"}',
        b'{"id": "a", "text": "\\ud800"}',
        b'{"id": "a", "text": "\xff"}',
        b"[1, 2]",
    ],
)
def test_the_fast_parse_path_gives_what_the_full_path_gives(tmp_path, line):
    path = write_jsonl(tmp_path / "a.jsonl", [line])
    fast = JsonlSource(JsonlParams(kind="jsonl", path=str(path)))
    full = JsonlSource(JsonlParams(kind="jsonl", path=str(path), fields={"id": "id"}))  # a field map: the full path
    fast.check()
    full.check()
    (got,), (want,) = list(fast.read()), list(full.read())
    # The fast lane gives a StoredRecord, the full path a Record: the same record either way.
    assert isinstance(got, QuarantineRow) is isinstance(want, QuarantineRow)
    assert got.to_json() == want.to_json()


DATA_NAMES = {
    "sft": ("sft.train.jsonl", "sft.eval.jsonl"),
    "preference": ("preference.train.jsonl", "preference.eval.jsonl"),
    "rollout": ("rollout.train.jsonl", "rollout.eval.jsonl"),
}


def killed_then_resumed(tmp_path: Path, overrides: list[str], kill_at: str, task: str = "sft") -> dict[str, bytes]:
    run_dir_path = tmp_path / f"killed-{kill_at.replace(':', '-')}"
    env = {**os.environ, "DISTILL_TEST_KILL_AFTER": kill_at}
    args = [*overrides, f"hydra.run.dir={run_dir_path}"]
    # Its own session: the kill hook takes the run's whole process group (driver and workers) down at once.
    done = subprocess.run(
        [sys.executable, "-m", "distill", *args], cwd=tmp_path, capture_output=True, text=True, env=env,
        start_new_session=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (run_dir_path / "manifest.json").exists()
    names = (*DATA_NAMES[task], "quarantine.jsonl", "stats.json")
    finished_early = {}
    for name in names:
        if kill_at.startswith("merge") and (run_dir_path / name).exists():
            finished_early[name] = (run_dir_path / name).read_bytes()  # merged whole before the kill: checked below
        else:
            assert not (run_dir_path / name).exists(), f"{name} exists before the run finished"
    if kill_at.startswith("merge"):
        # The merge gives back what it has merged: the spills it was reading hold holes.
        spills = list((run_dir_path / ".distill-work").rglob("*.spill"))
        assert any(p.stat().st_blocks * 512 < p.stat().st_size for p in spills)
    resumed = run_cli([*args, "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    # Killed in the reduce or the merge, the decide had finished: its decisions are reused, not made again.
    assert ("decide: finished before the interruption" in resumed.stderr) == kill_at.startswith(("reduce", "merge"))
    files = {name: (run_dir_path / name).read_bytes() for name in names}
    for name, data in finished_early.items():
        assert files[name] == data, f"{name} was final before the kill, and changed"
    return files


@pytest.mark.parametrize(("task", "kill_at"), [
    ("sft", "map:2"), ("sft", "reduce:2"), ("preference", "reduce:3"), ("rollout", "map:4"),
    # The merge checkpoints every 16 KiB under this hook: in the train file (1-80: a spill frame is 256 KiB, so 70 is
    # past the first), then in quarantine.jsonl (87-128).
    ("sft", "merge:70"), ("sft", "merge:120"),
])
def test_a_run_killed_mid_phase_and_resumed_equals_a_clean_run(tmp_path, corpus, task, kill_at):
    overrides = [
        f"source.path={corpus / 'logs.jsonl'}", "executor.workers=2", "executor.partitions=5", "executor.shard_mb=0.3",
        f"task={task}",
    ]
    clean = run_dir(tmp_path / "clean", overrides)
    resumed = killed_then_resumed(tmp_path, overrides, kill_at, task)
    for name, data in resumed.items():
        assert data == clean[name], f"{name} differs after resume"


@pytest.mark.parametrize("phase", ["map", "reduce"])
def test_a_worker_killed_mid_task_ends_the_run_in_one_line_and_resume_finishes_it(tmp_path, corpus, phase):
    # As the out-of-memory killer would: one worker dies, its task with it. A multiprocessing pool would start
    # another worker and wait for the lost task forever.
    overrides = [
        f"source.path={corpus / 'logs.jsonl'}", "executor.workers=2", "executor.partitions=5", "executor.shard_mb=0.3",
    ]
    clean = run_dir(tmp_path / "clean", overrides)
    args = [*overrides, f"hydra.run.dir={tmp_path / 'killed'}"]
    env = {**os.environ, "DISTILL_TEST_KILL_AFTER": f"{phase}-worker"}
    done = subprocess.run(
        [sys.executable, "-m", "distill", *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("distill: error: a worker process was killed")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "killed" / "manifest.json").exists()
    for name in (*DATA_NAMES["sft"], "quarantine.jsonl", "stats.json"):
        assert not (tmp_path / "killed" / name).exists()
    resumed = run_cli([*args, "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for name in (*DATA_NAMES["sft"], "quarantine.jsonl", "stats.json"):
        assert (tmp_path / "killed" / name).read_bytes() == clean[name], f"{name} differs after resume"


def test_a_dead_worker_is_the_same_error_whether_its_pool_broke_before_or_after_the_tasks_were_queued():
    with local.process_pool(1) as pool:
        (future,) = local.submitted(pool, os._exit, [(1,)])
        with pytest.raises(local.WorkerDied):
            local.result_of(future)
        with pytest.raises(local.WorkerDied):
            local.submitted(pool, int, [("1",)])


def test_a_workers_failed_setup_is_the_runs_one_line_error(tmp_path, corpus):
    # Where the driver's own setup succeeded and a worker's fails (a file gone since, memory): the error itself,
    # not a traceback logged by the pool and a "worker was killed" line.
    args = [f"source.path={corpus / 'logs.jsonl'}", "executor.workers=2", "executor.shard_mb=0.3", "hydra.run.dir=out"]
    env = {**os.environ, "DISTILL_TEST_KILL_AFTER": "setup-worker"}
    done = subprocess.run(
        [sys.executable, "-m", "distill", *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "distill: error: a worker's setup failed (the test hook)"
    assert "Traceback" not in done.stderr


def session_processes(session: int) -> dict[int, int]:
    """pid -> parent pid of every living process in this session (zombies, already ended, left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == session:  # state, ..., session id
            found[int(entry.name)] = int(fields[1])
    return found


def test_a_driver_killed_alone_takes_its_workers_and_their_fork_server_with_it(tmp_path):
    # The out-of-memory killer may pick the driver: its workers must not wait for tasks forever.
    rows = [{"id": f"r{i}", "session_id": f"s{i // 2}", "role": ("user", "assistant")[i % 2], "text": f"turn {i} " * 40,
             "created_at": 1767225600 + i, "category": "accepted"} for i in range(60000)]
    source = write_jsonl(tmp_path / "many.jsonl", rows)
    command = [sys.executable, "-m", "distill", f"source.path={source}", "hydra.run.dir=run", "executor.workers=2",
               "executor.shard_mb=0.5"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not [pid for pid, parent in session_processes(process.pid).items() if parent != process.pid
                   and pid != process.pid]:  # a worker, forked by the fork server: the map is under way
            assert time.monotonic() < deadline and process.poll() is None, "no worker started"
            time.sleep(0.05)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 15
        while session_processes(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not session_processes(process.pid), "processes of the run outlived its driver"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_resume_refuses_a_changed_config(tmp_path, corpus):
    overrides = [f"source.path={corpus / 'logs.jsonl'}", "executor.shard_mb=0.3", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "DISTILL_TEST_KILL_AFTER": "map:1"}
    subprocess.run(
        [sys.executable, "-m", "distill", *overrides], cwd=tmp_path, capture_output=True, env=env, start_new_session=True
    )
    changed = run_cli([*overrides, "resume=true", "split.seed=9"], cwd=tmp_path)
    assert changed.returncode != 0
    assert changed.stderr.strip().splitlines()[-1].startswith("distill: error: resume=true: the config or the inputs")
    assert "Traceback" not in changed.stderr


def test_the_plan_key_changes_with_the_plan_format(monkeypatch):
    # A run interrupted under one partitioning (hash64) or spill format is never resumed by a distill with another.
    config = {"task": {"kind": "sft"}, "resume": False, "executor": {"workers": 1}}
    key = prepare.plan_key(config, [])
    assert prepare.plan_key({**config, "resume": True, "executor": {"workers": 8}}, []) == key
    monkeypatch.setattr(prepare, "PLAN_FORMAT", prepare.PLAN_FORMAT + 1)
    assert prepare.plan_key(config, []) != key


def test_a_memory_budget_under_a_byte_plans_the_most_partitions_instead_of_dividing_by_zero():
    settings = build_settings(compose_config(["executor.memory_gb=1e-12", "executor.workers=2"]))
    assert settings.executor.memory_bytes == 1
    assert prepare.partition_count(10_000, settings.executor) == prepare.MAX_PARTITIONS


def test_hash64_gives_xxh3s_published_value_for_text_and_its_utf8_bytes():
    # Partitions and keys must be the same on every machine and version: XXH3-64's reference values, not whatever
    # the installed library happens to compute.
    assert hash64(b"") == 0x2D06800538D394C2
    assert hash64("") == hash64(b"")
    assert hash64("é") == hash64("é".encode("utf-8"))


def test_the_ids_spill_keeps_one_files_lines_as_numbers_and_gives_back_each_records_label():
    """A repeated id's drop names where the id was first read: a batch of one file's lines keeps only its line
    numbers, yet gives back every record's `Origin.label`, also for a bucket of it; a batch mixing files, or a
    store's rows, keeps the labels themselves."""
    lines = [SimpleNamespace(origin=Origin(path="logs.jsonl", line=n)) for n in (3, 7, 1_000_000)]
    labels = row_labels(lines)
    assert isinstance(labels, LineLabels)
    assert [labels[i] for i in range(3)] == ["logs.jsonl:3", "logs.jsonl:7", "logs.jsonl:1000000"]
    picked = labels_at(labels, np.array([2, 0]))
    assert [picked[0], picked[1]] == ["logs.jsonl:1000000", "logs.jsonl:3"]
    mixed = [*lines, SimpleNamespace(origin=Origin(path="b.jsonl", line=2)), SimpleNamespace(origin=None)]
    assert row_labels(mixed) == [*(r.origin.label() for r in lines), "b.jsonl:2", "an earlier row"]
    rows = [
        SimpleNamespace(origin=Origin(path="t.parquet", row=4)), SimpleNamespace(origin=Origin(uri="s3://x", version=2, row=0))
    ]
    assert row_labels(rows) == ["t.parquet#4", "s3://x@2#0"]
    assert labels_at(row_labels(rows), np.array([1])) == ["s3://x@2#0"]


def test_a_group_larger_than_a_workers_memory_budget_is_a_one_line_error(tmp_path):
    rows = [{"id": f"r{i}", "session_id": "huge", "role": "user", "text": "x" * 2000} for i in range(300)]
    path = write_jsonl(tmp_path / "a.jsonl", rows)
    done = run_cli(
        [f"source.path={path}", "executor.memory_gb=0.001", "executor.partitions=2", "hydra.run.dir=out"], cwd=tmp_path
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("distill: error: group 'huge' holds 300 records") and "executor.memory_gb" in last
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("ties", ["none", "some", "all"])
def test_keys_are_put_in_created_at_then_id_order(ties):
    """The decide phase orders every step's keys by (created_at, id), sorting ids only where created_at ties."""
    rng = random.Random(3)
    count = 2000
    spread = {"none": 10**12, "some": 300, "all": 1}[ties]
    micros = np.array(rng.sample(range(10**12), count) if ties == "none" else [rng.randrange(spread) for _ in range(count)])
    ids = [f"r{rng.randrange(10**9):09d}-{i}" for i in range(count)]
    expected = sorted(range(count), key=lambda i: (micros[i], ids[i]))
    assert in_order(micros, ids).tolist() == expected
    among = np.array(sorted(rng.sample(range(count), 700)))
    assert in_order(micros, ids, among).tolist() == sorted(among.tolist(), key=lambda i: (micros[i], ids[i]))


def test_a_spill_of_large_items_is_written_in_bounded_frames_each_pickled_once(tmp_path, monkeypatch):
    # Example lines of ~6 KB: a frame of FRAME_ITEMS of them would be ~12 MB. Frames stay near FRAME_BYTES (the
    # merge holds one frame per partition), and no frame is pickled twice to learn its size.
    pickled: list[int] = []
    dumps = spill.pickle.dumps

    def counted_dumps(value, **options):
        data = dumps(value, **options)
        pickled.append(len(data))
        return data

    monkeypatch.setattr(spill.pickle, "dumps", counted_dumps)
    rng = random.Random(3)
    items = [((i, f"id{i}"), bytes(rng.getrandbits(8) for _ in range(rng.randint(5000, 7000))), None) for i in range(3000)]
    path = tmp_path / "examples.spill"
    spill.write_spill(path, spill.frames(items), compress=False)
    assert list(spill.read_values(path)) == items
    frame_bytes = list(frames_of(path))
    assert max(frame_bytes) <= 2 * spill.FRAME_BYTES and len(frame_bytes) > 40
    assert sum(pickled) < 1.05 * sum(frame_bytes)  # each frame once, plus the first items' probe


def test_with_many_partitions_the_spills_a_merge_reads_have_smaller_frames_and_give_the_same_files(
    tmp_path, corpus, monkeypatch, caplog
):
    # A merge holds a frame of every spill it reads at once (a dataset file's: one a partition; the quarantine's: one a
    # shard and one a partition): past MERGE_HELD_BYTES / FRAME_BYTES spills the frames shrink, so that it holds about
    # MERGE_HELD_BYTES whatever the input. Here 7 partitions, shards of 0.2 MB and a 56 KiB hold.
    assert spill.merge_frame_bytes(166) == spill.FRAME_BYTES  # 1e7 bench records at the default budget
    assert spill.merge_frame_bytes(2000) * 2000 <= spill.MERGE_HELD_BYTES
    assert spill.merge_frame_bytes(10**6) == spill.MIN_FRAME_BYTES
    many_shards = PlanContext(None, None, partitions=200, compress=False, shards=300)
    assert many_shards.merge_frame_bytes == spill.FRAME_BYTES
    assert many_shards.quarantine_frame_bytes == spill.merge_frame_bytes(500) < spill.FRAME_BYTES
    written: list[tuple[str, bytes]] = []
    write_bytes = spill.SpillWriter.write_bytes  # only write_line_spill writes its frames as bytes

    def recorded(writer, data):
        written.append(("quarantine" if "quarantine" in writer.path.parts else "examples", bytes(data)))
        write_bytes(writer, data)

    def lines_before_the_last(data: bytes) -> int:
        _, _, ends = pickle.loads(data)  # a frame closes with the line that takes it to its size
        return ends[-2] if len(ends) > 1 else 0

    monkeypatch.setattr(spill.SpillWriter, "write_bytes", recorded)
    overrides = [
        f"source.path={corpus / 'logs.jsonl'}", "executor.workers=1", "executor.partitions=7", "executor.shard_mb=0.2",
    ]
    as_before = run_dir(tmp_path / "as_before", overrides)
    frames_before, written[:] = list(written), []
    monkeypatch.setattr(spill, "MERGE_HELD_BYTES", 7 * (8 << 10))
    monkeypatch.setattr(spill, "MIN_FRAME_BYTES", 1 << 10)
    with caplog.at_level(logging.INFO, logger="distill.runner"):
        assert run_dir(tmp_path / "small_frames", overrides) == as_before
    (shards,) = {int(n) for n in re.findall(r"plan: (\d+) shards", caplog.text)}
    assert shards > 5
    assert max(len(data) for _, data in frames_before) > 64 << 10
    bounds = {"examples": 8 << 10, "quarantine": 7 * (8 << 10) // (7 + shards)}
    for kind, bound in bounds.items():
        frames = [data for each, data in written if each == kind]
        assert frames and max(lines_before_the_last(data) for data in frames) < bound, kind
    assert len(written) > 3 * len(frames_before)


def frames_of(path):
    with path.open("rb") as handle:
        while header := handle.read(spill.FRAME_HEADER.size):
            (size,) = spill.FRAME_HEADER.unpack(header)
            handle.seek(size, os.SEEK_CUR)
            yield size


def test_an_input_that_changes_after_the_cut_or_goes_is_a_one_line_error_before_any_output(tmp_path):
    """The manifest's sha256 of a cut file is taken beside the map, with its XXH3 again: a file appended to since
    the cut (or gone) stops the run with one line, where the merge has not yet made any output final."""
    from distill.errors import DistillError
    from distill.plan.input_digests import InputDigests
    from distill.sources.base import Shard

    path = tmp_path / "logs.jsonl"
    path.write_bytes(b'{"id": "a"}\n')
    shard = Shard(0, str(path), "logs.jsonl", size=12, content_hash=hashing.file_content_hash(path))
    with InputDigests() as digests:
        digests.start([shard])
        digests.wait()
        entries = [{"path": next(iter(digests.files)), "sha256": None, "rows": 1}]
        digests.fill(entries)
    assert entries[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n')
    with InputDigests() as digests, pytest.raises(DistillError, match="changed while the run read it"):
        digests.start([shard])
        digests.wait()
    path.unlink()
    with InputDigests() as digests, pytest.raises(DistillError, match="cannot read .*logs.jsonl again"):
        digests.start([shard])
        digests.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="a thread has a priority of its own on Linux only")
def test_the_inputs_sha256_is_taken_at_the_lowest_priority_from_the_map_on(tmp_path, monkeypatch):
    """The thread hashing the inputs runs at nice 19 (its own, not the driver's), so it can start with the map and
    take only what the workers leave."""
    import threading

    from distill.plan import input_digests
    from distill.sources.base import Shard

    seen = []

    class Watched(input_digests.ContentHash):
        def update(self, chunk):
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            super().update(chunk)

    monkeypatch.setattr(input_digests, "ContentHash", Watched)
    driver = os.getpriority(os.PRIO_PROCESS, 0)
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b'{"id": "a"}\n')
    shard = Shard(0, str(path), "logs.jsonl", size=12, content_hash=hashing.file_content_hash(path))
    with input_digests.InputDigests() as digests:
        digests.start([shard])
        digests.wait()
    assert seen == [input_digests.LOWEST_PRIORITY] and os.getpriority(os.PRIO_PROCESS, 0) == driver


def test_where_a_thread_cannot_have_its_own_priority_the_inputs_sha256_waits_for_the_map(tmp_path, monkeypatch):
    """Elsewhere than Linux a nice value names the whole process: the hashing thread keeps its priority and starts
    only once the map is done, so it never competes with the map's workers."""
    from distill.plan import input_digests
    from distill.sources.base import Shard

    monkeypatch.setattr(input_digests.sys, "platform", "darwin")
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b'{"id": "a"}\n')
    shard = Shard(0, str(path), "logs.jsonl", size=12, content_hash=hashing.file_content_hash(path))
    with input_digests.InputDigests() as digests:
        digests.start([shard])
        digests.thread.join(timeout=0.5)
        assert digests.thread.is_alive() and not digests.digests, "hashed before the map was done"
        digests.map_done()
        digests.wait()
    assert list(digests.digests.values()) == [hashlib.sha256(path.read_bytes()).hexdigest()]


def run_with_open_files_limit(tmp_path: Path, args: list[str], soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-m", "distill", *args], cwd=tmp_path, capture_output=True, text=True, preexec_fn=limited,
    )


def test_a_plan_holding_more_files_open_than_the_soft_limit_raises_it_and_runs(tmp_path, corpus):
    """120 partitions over shards of 0.2 MB hold more files open than a soft limit of 64 at once (the merge failed
    on "Too many open files" after all the work before): the run raises its soft limit to the hard one first."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    args = [
        f"source.path={corpus / 'logs.jsonl'}", "executor.partitions=120", "executor.shard_mb=0.2",
        "executor.workers=2", "report=false", "hydra.run.dir=out",
    ]
    done = run_with_open_files_limit(tmp_path, args, 64, hard)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "manifest.json").exists()


def test_a_plan_holding_more_files_open_than_the_system_allows_is_one_line_before_the_map(tmp_path, corpus):
    args = [f"source.path={corpus / 'logs.jsonl'}", "executor.partitions=120", "executor.shard_mb=0.2", "hydra.run.dir=out"]
    done = run_with_open_files_limit(tmp_path, args, 64, 64)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("distill: error: this plan holds up to") and "more than this system allows (64)" in line
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "out").glob("*.jsonl")), "nothing is written before the plan is refused"


def test_a_partition_spill_gives_back_its_entries_whether_their_records_were_packed_or_not(tmp_path):
    """The map packs a write's records in one msgpack blob when every one of them fits (`packed_records`), and
    pickles them one by one when one does not; the reduce reads either as the same (handle, record, pending)
    entries, each record with the record's values (a StoredRecord, unless it had to be pickled the pydantic way)."""
    from distill.plan.map import PackedEntries, PartitionSpills, read_part
    from distill.quarantine import Drop
    from distill.reasons import Reason
    from distill.record import RECORD_FIELDS, Origin, StoredRecord, packed_records
    from distill.sources.fast_lane import fast_record

    lines = [
        {"id": f"r{i}", "session_id": "s", "text": f"turn {i}", "created_at": f"2026-01-01T00:00:0{i}Z", "role": "user"}
        for i in range(5)
    ]
    stored = [fast_record(json.dumps(line).encode(), Origin(path="a.jsonl", line=i + 1)) for i, line in enumerate(lines)]
    assert all(type(record) is StoredRecord for record in stored)
    odd = Record.model_validate({"id": "odd", "metadata": {"a_tuple": (1, 2)}})
    assert packed_records(stored) is not None and packed_records([*stored, odd]) is None

    settings = build_settings(compose_config([]))
    layout = Layout(tmp_path / "work")
    layout.make(1, [])
    ctx = PlanContext(settings, layout, 1, False)
    drop = Drop(Reason.lifecycle, ("status retired",))
    packed = [(1, stored[0], None), (2, stored[1], (1, drop))]
    unpacked = [(3, stored[2], None), (4, odd, None), (5, stored[3], None)]
    sink = PartitionSpills(ctx, 0)
    sink.write(0, packed)
    sink.write(0, unpacked)
    sink.close()
    written = list(spill.read_values(layout.part(0, 0)))
    assert type(written[0]) is PackedEntries and not any(type(item) is PackedEntries for item in written[1:])

    back = list(read_part(layout.part(0, 0)))
    assert [(handle, pending) for handle, _, pending in back] == [(h, p) for h, _, p in packed + unpacked]
    for (_, record, _), (_, original, _) in zip(back, packed + unpacked):
        if original is odd:  # beyond a blob: pickled the pydantic way, and back as the record itself
            assert record == odd and type(record.metadata["a_tuple"]) is tuple
            continue
        assert isinstance(record, StoredRecord)
        assert [getattr(record, name) for name in RECORD_FIELDS] == [getattr(original, name) for name in RECORD_FIELDS]
    assert list(read_part(layout.part(0, 1))) == []  # a shard that sent the partition nothing

    # A large write goes in several packs of about FRAME_BYTES (a whole 4,096-record batch was one ~7 MB frame).
    many = [
        (i, fast_record(json.dumps({"id": f"m{i}", "text": f"{i} " + "x" * 2000}).encode(), Origin(path="b", line=i)), None)
        for i in range(600)
    ]
    sink = PartitionSpills(ctx, 1)
    sink.write(0, many)
    sink.close()
    items = list(spill.read_values(layout.part(0, 1)))
    assert len(items) > 3 and all(type(item) is PackedEntries for item in items)
    assert max(len(item.records) for item in items) < 2 * spill.FRAME_BYTES
    assert [(handle, record.id) for handle, record, _ in read_part(layout.part(0, 1))] == [(i, f"m{i}") for i in range(600)]


def test_small_packs_of_a_partition_share_frames_of_about_frame_bytes_held_within_a_bound(tmp_path, monkeypatch):
    """A batch spread over many partitions makes small packs; a partition's packs are held until they make a frame of
    FRAME_BYTES (or less where HELD_PACK_BYTES shared by every partition allows less), and read back in order."""
    from distill.plan import map as map_module
    from distill.plan.context import PlanContext
    from distill.plan.map import PackedEntries, PartitionSpills, read_part
    from distill.record import Origin
    from distill.sources.fast_lane import fast_record

    def records(start: int, count: int) -> list:
        return [
            (i, fast_record(json.dumps({"id": f"m{i}", "text": f"{i} " + "x" * 2000}).encode(), Origin(path="b", line=i)), None)
            for i in range(start, start + count)
        ]

    settings = build_settings(compose_config([]))
    layout = Layout(tmp_path / "work")
    layout.make(4, [])
    sink = PartitionSpills(PlanContext(settings, layout, 4, False), 0)
    for write in range(60):  # packs of 5 records, ~10 KB each
        sink.write(write % 2, records(write * 5, 5))
    sink.close()
    for partition in (0, 1):
        frames = list(spill.read_batches(layout.part(partition, 0)))
        packs = [len(item.records) for frame in frames for item in frame]
        assert all(type(item) is PackedEntries for frame in frames for item in frame) and len(packs) == 30
        assert len(frames) < len(packs)  # several packs to a frame
        assert all(sum(len(item.records) for item in frame) >= spill.FRAME_BYTES for frame in frames[:-1])
        expected = [i for write in range(partition, 60, 2) for i in range(write * 5, write * 5 + 5)]
        assert [handle for handle, _, _ in read_part(layout.part(partition, 0))] == expected

    # Many partitions: each holds back less, so that what all of them hold stays within HELD_PACK_BYTES.
    monkeypatch.setattr(map_module, "HELD_PACK_BYTES", 4 * 30_000)
    sink = PartitionSpills(PlanContext(settings, layout, 4, False), 1)
    assert sink.frame_bytes == 30_000
    for write in range(20):
        sink.write(2, records(write * 5, 5))
    sink.close()
    frames = list(spill.read_batches(layout.part(2, 1)))
    assert all(30_000 <= sum(len(item.records) for item in frame) < 45_000 for frame in frames[:-1])
    assert [handle for handle, _, _ in read_part(layout.part(2, 1))] == list(range(100))


def test_a_records_embedding_stays_packed_through_the_reduce_and_comes_back_exactly_where_it_is_read(tmp_path):
    """A record read back from a part spill holds its embedding as the bytes the map packed, not as a list of floats
    (no task reads embeddings); its JSON (what a quarantine row holds), its pydantic record and `with_embedding` give
    back the very values, an integer still an integer, and a step's change of the embedding replaces the packed one."""
    from distill.output.files import jsonl_bytes
    from distill.plan.context import PlanContext
    from distill.plan.map import PartitionSpills, read_part
    from distill.quarantine import row_json
    from distill.reasons import Reason
    from distill.record import Origin, replaced
    from distill.sources.fast_lane import fast_record

    lines = [
        {"id": "a", "session_id": "s", "text": "one", "embedding": [0.1744, -2.0962, 1e-07, 12345.678]},
        {"id": "b", "session_id": "s", "text": "two"},
    ]
    stored = [fast_record(json.dumps(line).encode(), Origin(path="e.jsonl", line=i + 1)) for i, line in enumerate(lines)]
    stored.append(replaced(stored[0], id="c", embedding=[1, 2.5, -3]))  # a step may leave integers in it
    layout = Layout(tmp_path / "work")
    layout.make(1, [])
    sink = PartitionSpills(PlanContext(build_settings(compose_config([])), layout, 1, False), 0)
    sink.write(0, [(i, record, None) for i, record in enumerate(stored)])
    sink.close()
    back = [record for _, record, _ in read_part(layout.part(0, 0))]

    assert [record.embedding for record in back] == [None, None, None]
    assert [record.packed_embedding is not None for record in back] == [True, False, True]
    for record, original in zip(back, stored):
        assert record.to_json() == original.to_json()
        assert record.as_record() == original.as_record()
        assert record.with_embedding() == original
        row = jsonl_bytes(row_json("task", Reason.after_gap, ("why",), record.id, record.origin, record, encoded=True))
        assert row == jsonl_bytes(row_json("task", Reason.after_gap, ("why",), original.id, original.origin, original))
    assert [type(value) for value in back[2].to_json()["embedding"]] == [int, float, int]
    changed = replaced(back[0], embedding=[0.5])
    assert changed.embedding == [0.5] and changed.packed_embedding is None and changed.to_json()["embedding"] == [0.5]


def test_the_reduce_bounds_a_partition_by_its_spills_bytes_only_when_none_is_compressed(tmp_path):
    """A partition whose part spills bound its estimate within the budget skips the group-by-group check; a
    compressed spill (one an earlier run compressed, say) bounds nothing, so its groups are checked one by one."""
    plain = tmp_path / "plain.spill"
    packed = tmp_path / "packed.spill"
    spill.write_spill(plain, [[(f"{i}" + "x" * 1000, i) for i in range(50)]], compress=False)
    spill.write_spill(packed, [[(f"{i}" + "x" * 1000, i) for i in range(50)]], compress=True)
    assert spill.plain_spill_bytes([plain, tmp_path / "missing.spill"]) == plain.stat().st_size > 50_000
    assert spill.plain_spill_bytes([plain, packed]) is None
    assert spill.plain_spill_bytes([]) == 0


def test_workers_forked_from_a_server_started_early_get_the_raised_open_files_limit(tmp_path):
    """The fork server may start before the runner raises the driver's limit (`fork_server.start_early`): it raises
    it first, so its workers never keep a soft limit too low for the plan's spills."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    script = (
        "import resource\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from distill.fork_server import fork_server_context\n"
        "with ProcessPoolExecutor(1, mp_context=fork_server_context()) as pool:\n"
        "    print(pool.submit(resource.getrlimit, resource.RLIMIT_NOFILE).result()[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)),
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == min(hard, 1 << 20)


def test_one_pool_of_workers_serves_the_map_the_decide_and_the_reduce(tmp_path, corpus, caplog):
    # A worker's later phase reuses the heap its earlier one grew (the decide's keys' for its reduce partitions):
    # one pool for the run, not one per phase, and the decide on one of its workers, not in the driver.
    caplog.set_level(logging.INFO, logger="distill")
    overrides = [f"source.path={corpus / 'logs.jsonl'}", "executor.workers=2", "executor.partitions=5",
                 "executor.shard_mb=0.3"]
    run_dir(tmp_path / "run", overrides)
    messages = [record.getMessage() for record in caplog.records]
    started = [i for i, m in enumerate(messages) if m == "local: 2 worker processes, for every phase still to run"]
    phases = {m.split(":")[0]: i for i, m in enumerate(messages) if m.startswith(("local map:", "local decide:", "local reduce:"))}
    assert len(started) == 1 and started[0] < phases["local map"] < phases["local decide"] < phases["local reduce"]
    assert any(m.startswith("decide: peak RSS of its process") for m in messages)

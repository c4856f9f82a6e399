"""Compressed inputs wherever distill reads files (sources, eval sets), and the one-line error for binary files."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil

import pytest
import zstandard
from helpers import read_jsonl, run_cli, run_pipeline, write_jsonl
from lakehouse_fixture import FIXTURE as LAKEHOUSE
from step_helpers import apply, make_step, rec

from distill.curation.evalsets import load_eval_items
from distill.errors import DistillError
from distill.sources.files import open_input

COMPRESS = {
    "gz": lambda data: gzip.compress(data, mtime=0),
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
    "bz2": bz2.compress,
    "xz": lzma.compress,
}
HUMANEVAL_PROMPT = (
    'def has_close_elements(numbers: List[float], threshold: float) -> bool:\n    """ Check if in given list of numbers, '
    "are any two numbers closer to each other than\n    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n"
    '    False\n    """\n'
)


def logs(n=4):
    rows = []
    for s in range(n):
        rows.append({"id": f"u{s}", "session_id": f"s{s}", "role": "user", "text": f"question {s}", "created_at": s * 10})
        rows.append({"id": f"a{s}", "session_id": f"s{s}", "role": "assistant", "text": f"answer {s}", "created_at": s * 10 + 1})
    return [json.dumps(r).encode() for r in rows]


@pytest.mark.parametrize("suffix", COMPRESS)
def test_every_compression_reads_by_suffix_and_by_magic_bytes(tmp_path, suffix):
    data = b"\n".join(logs()) + b"\n"
    named = tmp_path / f"logs.jsonl.{suffix}"
    named.write_bytes(COMPRESS[suffix](data))
    misnamed = tmp_path / "logs.jsonl"  # compressed, but named as plain text
    misnamed.write_bytes(COMPRESS[suffix](data))
    for path in (named, misnamed):
        with open_input(path, "source.path") as handle:
            assert handle.read() == data


def test_a_directory_of_only_compressed_logs_is_read_and_gives_the_plain_run(tmp_path):
    plain = write_jsonl(tmp_path / "plain" / "logs.jsonl", logs())
    packed = tmp_path / "packed" / "logs.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    run_pipeline(tmp_path / "a", [f"source.path={plain.parent}", "split=none"])
    result = run_pipeline(tmp_path / "b", [f"source.path={packed.parent}", "split=none"])
    assert (tmp_path / "a" / "sft.jsonl").read_bytes() == (tmp_path / "b" / "sft.jsonl").read_bytes()
    assert result.manifest["counts"]["input_lines"] == 8
    (entry,) = result.manifest["inputs"]
    assert entry["path"].endswith("logs.jsonl.gz") and entry["rows"] == 8
    assert entry["sha256"] == __import__("hashlib").sha256(packed.read_bytes()).hexdigest()  # the file on disk


def test_a_binary_file_of_no_known_compression_is_a_one_line_error(tmp_path):
    binary = tmp_path / "logs.jsonl"
    binary.write_bytes(b"PAR1\x00\x15\x04\x15\x10\x00\x00\x00\x00\x00\x00" * 20)
    done = run_cli([f"source.path={binary}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("distill: error: source.path: ") and "binary file of no known compression" in line


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not gzip at all\n", "named as gzip but its bytes are not gzip"), (None, "unreadable gzip file")],
)
def test_a_misnamed_or_truncated_compressed_file_is_one_error(tmp_path, content, message):
    path = tmp_path / "logs.jsonl.gz"
    path.write_bytes(content if content is not None else gzip.compress(b"\n".join(logs(50)), mtime=0)[:-40])
    with pytest.raises(DistillError, match=message):
        with open_input(path, "source.path") as handle:
            handle.read()


def test_a_zstd_file_cut_short_is_one_error_and_one_of_several_frames_reads_whole(tmp_path):
    data = b"".join(line + b"\n" for line in logs(2000))
    frames = b"".join(zstandard.ZstdCompressor().compress(data[i : i + 5000]) for i in range(0, len(data), 5000))
    whole = tmp_path / "frames.jsonl.zst"
    whole.write_bytes(frames)
    with open_input(whole, "source.path") as handle:
        assert handle.read() == data
    for cut in (frames[: len(frames) // 2], frames[:-3]):
        (tmp_path / "cut.jsonl.zst").write_bytes(cut)
        with pytest.raises(DistillError, match="unreadable zstd file .*cut short"):
            with open_input(tmp_path / "cut.jsonl.zst", "source.path") as handle:
                handle.read()


def test_decontamination_against_a_gzip_eval_set_finds_the_planted_leaks(tmp_path):
    rows = [{"task_id": "HumanEval/0", "prompt": HUMANEVAL_PROMPT, "entry_point": "has_close_elements"},
            {"task_id": "HumanEval/1", "prompt": "def separate_paren_groups(paren_string: str) -> List[str]:\n", "entry_point": "x"}]
    evals = tmp_path / "HumanEval.jsonl.gz"
    evals.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows), mtime=0))
    leaked = rec("leak", 1, text=f"Sure, here is the task:\n{HUMANEVAL_PROMPT}    for i, a in enumerate(numbers): ...")
    clean = rec("clean", 2, text="Write a function that sorts a list of numbers in place and returns nothing.")
    kept, dropped, stage = apply(make_step("decontaminate", eval_sets=[str(evals)]), [leaked, clean])
    assert kept == ["clean"]
    assert dropped["leak"].detail["eval_set"] == "HumanEval" and dropped["leak"].detail["eval_item"] == "HumanEval/0"
    assert stage["eval_items"] == {"HumanEval": 2}


def test_eval_items_come_from_problem_and_from_question_with_choices(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"problem": "Find all real x with x^2 = 4.", "solution": "x = 2 or x = -2"},
        {"question": "Which gas do plants absorb?", "choices": ["Oxygen", "Carbon dioxide", "Nitrogen"], "answer": 1},
        {"id": "arc-1", "question": "What melts ice?", "choices": {"text": ["Heat", "Cold"], "label": ["A", "B"]}},
    ])
    items = load_eval_items([str(path)], "eval_sets")
    assert [i.text for i in items] == [
        "Find all real x with x^2 = 4.", "Which gas do plants absorb?\nOxygen\nCarbon dioxide\nNitrogen", "What melts ice?\nHeat\nCold"]
    assert [i.item for i in items] == ["mixed.jsonl:1", "mixed.jsonl:2", "arc-1"]


def test_a_binary_eval_set_is_an_error_not_garbage_items(tmp_path):
    path = tmp_path / "evals.jsonl"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DistillError, match="binary file of no known compression"):
        load_eval_items([str(path)], "curation.steps.decontaminate.eval_sets")


def test_compressed_lakehouse_partitions_are_read(tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(LAKEHOUSE, root)
    run_pipeline(tmp_path / "a", ["source=lakehouse", f"source.root={root}", "task=rag", "split=none"])
    for path in sorted((root / "data").rglob("*.jsonl")):
        path.with_name(path.name + ".zst").write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
        path.unlink()
    result = run_pipeline(tmp_path / "b", ["source=lakehouse", f"source.root={root}", "task=rag", "split=none"])
    assert (tmp_path / "a" / "rag.jsonl").read_bytes() == (tmp_path / "b" / "rag.jsonl").read_bytes()
    assert read_jsonl(tmp_path / "b" / "quarantine.jsonl")
    assert result.manifest["counts"]["input_lines"] == result.manifest["counts"]["input_rows"]


@pytest.mark.parametrize("suffix", ["gz", "zst"])
def test_a_compressed_json_array_reads_like_the_plain_one(tmp_path, suffix):
    rows = [json.loads(line) for line in logs()]
    plain = tmp_path / "plain" / "logs.json"
    plain.parent.mkdir()
    plain.write_text(json.dumps(rows, indent=2))
    packed = tmp_path / "packed" / f"logs.json.{suffix}"
    packed.parent.mkdir()
    packed.write_bytes(COMPRESS[suffix](plain.read_bytes()))
    run_pipeline(tmp_path / "a", [f"source.path={plain.parent}", "split=none"])
    result = run_pipeline(tmp_path / "b", [f"source.path={packed.parent}", "split=none"])
    assert (tmp_path / "a" / "sft.jsonl").read_bytes() == (tmp_path / "b" / "sft.jsonl").read_bytes()
    assert result.manifest["counts"]["input_lines"] == len(rows)


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_a_compressed_shard_is_sized_by_the_text_it_holds(tmp_path, suffix):
    """The plan sizes partitions by shard size: a compressed file counts the bytes it decompresses to (exactly for
    a small file, from its first MB for a large one), never its far smaller compressed size."""
    from distill.sources.jsonl import JsonlParams, JsonlSource

    small = b"\n".join(logs()) + b"\n"
    large = b"".join(b'{"id": "r%d", "text": "%s"}\n' % (i, b"word %d " % (i % 97) * 20) for i in range(100_000))
    for name, data in (("small", small), ("large", large)):
        path = tmp_path / name / f"logs.jsonl.{suffix}"
        path.parent.mkdir()
        path.write_bytes(COMPRESS[suffix](data))
        (shard,) = JsonlSource(JsonlParams(kind="jsonl", path=str(path))).shards(1 << 20)
        assert path.stat().st_size < len(data) / 2
        if name == "small":
            assert shard.size == len(data)
        else:
            assert abs(shard.size - len(data)) < 0.1 * len(data), (shard.size, len(data))

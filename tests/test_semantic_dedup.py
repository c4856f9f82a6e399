"""semantic_dedup: records within a cosine distance of an earlier kept record go; records without embeddings stay."""

from __future__ import annotations

import math
import random

import jsonschema
import pytest
from helpers import read_jsonl, run_pipeline, write_jsonl
from step_helpers import apply, make_step, rec

from distill.errors import DistillError
from distill.validation import load_schema


def rotated(vector: list[float], angle: float) -> list[float]:
    """`vector` (unit length, in the x-y plane) turned by `angle` radians: cosine distance 1 - cos(angle)."""
    x, y = vector[0], vector[1]
    return [x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle), *vector[2:]]


def test_drops_records_close_to_an_earlier_kept_record_and_names_it():
    base = [1.0, 0.0, 0.0, 0.0]
    records = [
        rec("a", 1, text="x", embedding=base),
        rec("b", 2, text="x", embedding=rotated(base, math.acos(0.97))),  # distance 0.03
        rec("c", 3, text="x", embedding=rotated(base, math.acos(0.90))),  # distance 0.10
        rec("d", 4, text="x", embedding=[0.0, 0.0, 5.0, 0.0]),  # orthogonal; length does not matter
        rec("e", 5, text="x", embedding=[0.0, 0.0, 1.0, 0.0]),
        rec("f", 6, text="x"),
    ]
    kept, dropped, stage = apply(make_step("semantic_dedup"), records)
    assert kept == ["a", "c", "d", "f"]
    assert dropped["b"].reason.value == "semantic_duplicate"
    assert dropped["b"].detail["duplicate_of"] == "a"
    assert dropped["b"].detail["distance"] == pytest.approx(0.03, abs=1e-4)
    assert dropped["e"].detail == {"duplicate_of": "d", "distance": 0.0}
    assert stage["dropped"] == {"semantic_duplicate": 2}


def test_threshold_is_a_cosine_distance():
    base = [1.0, 0.0]
    records = [rec("a", 1, embedding=base), rec("b", 2, embedding=rotated(base, math.acos(0.90)))]
    assert apply(make_step("semantic_dedup", threshold=0.05), records)[0] == ["a", "b"]
    assert apply(make_step("semantic_dedup", threshold=0.11), records)[0] == ["a"]


def test_only_kept_records_absorb_later_ones():
    # b is within reach of a and c of b, but c is 0.12 from a: b goes (near a), c stays (b was not kept).
    base = [1.0, 0.0]
    records = [
        rec("a", 1, embedding=base),
        rec("b", 2, embedding=rotated(base, math.acos(0.97))),
        rec("c", 3, embedding=rotated(base, 2 * math.acos(0.97))),
    ]
    kept, dropped, _ = apply(make_step("semantic_dedup", threshold=0.05), records)
    assert kept == ["a", "c"] and dropped["b"].detail["duplicate_of"] == "a"


def test_many_random_vectors_agree_with_brute_force_and_batching():
    rng = random.Random(5)
    vectors = [[rng.gauss(0, 1) for _ in range(16)] for _ in range(300)]
    for i in range(0, 300, 7):  # plant near copies of earlier vectors
        source = vectors[rng.randrange(max(i, 1))]
        vectors[i] = [v + rng.gauss(0, 0.02) for v in source]
    records = [rec(f"r{i:03d}", i, embedding=v) for i, v in enumerate(vectors)]

    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    kept_brute: list[list[float]] = []
    expected = []
    for r in records:
        if not any(1 - sum(a * b for a, b in zip(unit(r.embedding), k)) <= 0.05 for k in kept_brute):
            kept_brute.append(unit(r.embedding))
            expected.append(r.id)
    for batch_size in (1, 64, 1000):
        assert apply(make_step("semantic_dedup"), records, batch_size)[0] == expected
    assert len(expected) < 300


def test_embeddings_of_different_lengths_are_a_one_line_error():
    with pytest.raises(DistillError, match="different lengths"):
        apply(make_step("semantic_dedup"), [rec("a", 1, embedding=[1.0, 0.0]), rec("b", 2, embedding=[1.0, 0.0, 0.0])])


def test_pipeline_quarantine_rows_are_schema_valid(tmp_path):
    logs = write_jsonl(tmp_path / "logs.jsonl", [
        {"id": f"{role[0]}{s}", "session_id": f"s{s}", "role": role, "text": f"{role} {s}", "created_at": s * 10 + k,
         "embedding": [1.0, 0.001 * s] if role == "assistant" else [0.0, 1.0 + s]}
        for s in range(3) for k, role in enumerate(["user", "assistant"])
    ])
    run_pipeline(tmp_path / "run", [f"source.path={logs}", "split=none", "++curation.steps.semantic_dedup.roles=[assistant]"])
    rows = read_jsonl(tmp_path / "run" / "quarantine.jsonl")
    assert sorted(r["record_id"] for r in rows if r["reason"] == "semantic_duplicate") == ["a1", "a2"]
    for row in rows:
        jsonschema.validate(row, load_schema("quarantine_row"))

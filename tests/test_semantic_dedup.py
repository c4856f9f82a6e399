"""semantic_dedup: records within a cosine distance of an earlier kept record go; records without embeddings stay."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import jsonschema
import numpy as np
import pytest
from helpers import read_jsonl, run_pipeline, write_jsonl
from step_helpers import apply, make_step, rec

from distill.curation.steps.semantic_dedup import _signs
from distill.errors import DistillError
from distill.plan.decide_units import UnitsOnDisk
from distill.record import order_micros
from distill.record import Record
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


def test_a_batch_without_any_embedding_keeps_its_records():
    records = [
        rec("a", 1, text="x"), rec("b", 2, text="y"), rec("c", 3, embedding=[1.0, 0.0]), rec("d", 4, embedding=[1.0, 0.0]),
    ]
    kept, dropped, _ = apply(make_step("semantic_dedup"), records, batch_size=2)
    assert kept == ["a", "b", "c"]
    assert dropped["d"].reason == "semantic_duplicate"


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


def test_records_left_on_disk_in_buckets_decide_what_one_pass_in_memory_decides(tmp_path):
    """The plan decides semantic_dedup a partition bucket at a time, the embeddings on disk (`UnitsOnDisk`): the
    drops and figures are those of every record decided in memory at once, with the survivors and duplicates
    spread over the buckets and created_at ties broken by id across them."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(15, 48))
    records = []
    for i in range(240):
        vector = centres[i % 15] + rng.normal(scale=0.02 if i % 3 else 0.5, size=48)
        records.append(rec(f"r{i:03d}", i % 17, text="x", embedding=vector.tolist(), session_id=f"s{i % 5}"))
    step = make_step("semantic_dedup")
    ordered = sorted(records, key=Record.order_key)
    expected = step.decide([step.keys(ordered)])
    expected_figures = dict(step.figures)
    assert len(expected) > 60

    step.figures.clear()
    on_disk = UnitsOnDisk(tmp_path / "units", compress=False)
    for bucket in range(3):
        batch = [r for r in ordered if int(r.session_id[1:]) % 3 == bucket]
        keys = step.keys(batch)
        micros = np.array([order_micros(r.created_at) for r in batch], dtype=np.int64)
        on_disk.add(keys.vectors, keys.ids, keys.ids, micros, keys.ids)
    on_disk.number()
    found = step.decide_embeddings(on_disk)
    on_disk.remove()
    assert found == expected
    assert step.figures == expected_figures


def test_the_hyperplane_signs_do_not_depend_on_the_order_of_the_sums_or_the_rows_per_call():
    """A projection's sign is that of an exact sum (of the quantized vector), never of a float32 rounding that
    depends on how the BLAS orders its additions or on how many records one call projects: here each projection
    cancels two large terms next to a small one, in every order of the dimensions."""
    small = 2.0**-30  # below float32's precision next to 1.0
    vectors = np.array([[1.0, -1.0, small, 0.5], [small, 1.0, -1.0, -0.5], [-1.0, small, 1.0, 0.25]], np.float32)
    planes = np.array([[1, 1, -1], [1, 1, -1], [1, -1, 1], [0, 1, 1]], dtype=np.float32)
    found = _signs(vectors, planes).tolist()
    for order in itertools.permutations(range(4)):
        assert _signs(vectors[:, order], planes[order, :]).tolist() == found, order
    for row in range(len(vectors)):
        assert _signs(vectors[row : row + 1], planes).tolist() == [found[row]]
    # The signs of the exact sums, the small term quantized away (a row and a plane may well be orthogonal: False).
    quantized = np.where(np.abs(vectors) < 1e-6, 0, vectors)
    exact = [[sum(Fraction(float(v)) * Fraction(float(p)) for v, p in zip(row, column)) > 0 for column in planes.T]
             for row in quantized]
    assert found == exact

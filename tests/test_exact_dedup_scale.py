"""exact_dedup at scale: a fast normal form that agrees with `normalize_text`, compact keys, planted copies."""

from __future__ import annotations

import random

import numpy as np
from step_helpers import apply, make_step, prose, rec

from distill.hashing import normalize_text


def test_key_hashes_are_equal_exactly_when_normalised_texts_are():
    rng = random.Random(0)
    alphabet = "aB c\t\n\x1c.,!Éé\u00dfİﬁZ\u00a0\u2003x"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(3000)]
    step = make_step("exact_dedup", scope="record")
    hashes = step.keys([rec(f"r{i}", i, text=text) for i, text in enumerate(texts)]).hashes.tolist()
    by_form: dict[str, int] = {}
    for text, digest in zip(texts, hashes):
        assert by_form.setdefault(normalize_text(text), digest) == digest
    assert len(set(hashes)) == len(by_form)


def test_keys_hold_one_uint64_per_record_in_scope():
    step = make_step("exact_dedup", scope="record", roles=["assistant"])
    keys = step.keys([rec("a", 1, role="assistant", text="x"), rec("u", 2, role="user", text="x"), rec("n", 3)])
    assert keys.ids == ["a"] and keys.hashes.dtype == np.uint64 and keys.hashes.shape == (1,)
    assert keys.groups == []


def test_planted_copies_among_many_records_are_exactly_the_drops():
    rng = random.Random(1)
    originals = [" ".join(prose(seed, rng.randint(3, 40))) for seed in range(4000)]
    records = [rec(f"o{i:05d}", i, role="assistant", text=text) for i, text in enumerate(originals)]
    planted = {}
    for n in range(500):
        source = rng.randrange(len(originals))
        copy = originals[source].upper().replace(" ", "  \n ")  # same words, other case and spacing
        planted[f"c{n:04d}"] = f"o{source:05d}"
        records.append(rec(f"c{n:04d}", 5000 + n, role="assistant", text=copy))
    kept, dropped, stage = apply(make_step("exact_dedup", scope="record"), records, batch_size=4096)
    assert set(dropped) == set(planted)
    assert all(dropped[c].detail["duplicate_of"] == source for c, source in planted.items())
    assert len(kept) == 4000 and stage["dropped"] == {"duplicate": 500}

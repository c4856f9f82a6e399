"""exact_dedup at scale: a fast normal form that agrees with `normalize_text`, compact keys, planted copies."""

from __future__ import annotations

import os
import pickle
import random
import sys
from dataclasses import replace

import numpy as np
import pytest
from step_helpers import apply, make_step, prose, rec

from distill.curation.steps.exact_dedup import Conversations, ExactKeys
from distill.curation.textnorm import ascii_exact_forms, ascii_exact_forms_in_python, exact_forms
from distill.hashing import hash64, normalize_text
from distill.plan.decide import held_bytes


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


@pytest.mark.parametrize("batch", [1, 2, 7, 500])
def test_a_batch_of_mostly_ascii_texts_has_each_texts_normal_form(batch):
    # Runs of whitespace, whitespace at either end, empty texts and the odd non-ASCII text, side by side in a batch
    # (the batch is searched for spaces at once, so a text's spacing must never leak into its neighbour's form).
    rng = random.Random(batch)
    pieces = ["ab", "Cd", " ", "  ", "\t", "\r\n", "\x1c", "x.y", "É", ""]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) for _ in range(batch * 40)]
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        assert exact_forms(chunk) == [normalize_text(text).encode("utf-8") for text in chunk]


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


def reference_decisions(scope, batches):
    """The decisions made the plain way, one record at a time: the first record (or group, by its first record) in
    (created_at, id) order with a key keeps it; every later one is dropped, naming it."""
    drops, survivors, members, conversations = {}, {}, {}, {}
    for batch in batches:
        for index, (record_id, digest) in enumerate(zip(batch.ids, batch.hashes.tolist())):
            if scope == "record":
                kept = survivors.setdefault(digest, record_id)
                if kept != record_id:
                    drops[record_id] = ("same text as", kept)
            else:
                members.setdefault(batch.groups[index], []).append((record_id, digest))
    for group, records in members.items():
        conversation = hash64(b"".join(digest.to_bytes(8, "big") for _, digest in records))
        kept = conversations.setdefault(conversation, group)
        if kept != group:
            drops.update({record_id: ("conversation repeats group", kept) for record_id, _ in records})
    return drops


@pytest.mark.parametrize("scope", ["record", "group"])
def test_decisions_over_many_key_batches_are_those_of_one_record_at_a_time(scope):
    rng = random.Random(5)
    step = make_step("exact_dedup", scope=scope)
    for _ in range(40):
        # Few distinct texts and short conversations: many copies, groups interleaved across batches.
        batches, number = [], 0
        for _ in range(rng.randint(0, 4)):
            size = rng.randint(0, 30)
            ids = [f"r{number + i}" for i in range(size)]
            number += size
            groups = [f"g{rng.randint(0, 12)}" for _ in range(size)] if scope == "group" else []
            hashes = np.array([rng.randint(0, 5) for _ in range(size)], dtype=np.uint64)
            batches.append(ExactKeys(ids, groups, hashes))
        got = {record_id: (drop.errors[0].rsplit(" ", 1)[0], drop.detail["duplicate_of"])
               for record_id, drop in step.decide(batches).items()}
        assert got == reference_decisions(scope, batches)


def test_a_conversation_hash_is_that_of_its_records_digests_in_order():
    groups = ["b", "a", "b", "c", "a", "b"]
    digests = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint64)
    conversations = Conversations.of(groups, digests)
    assert conversations.names == ["b", "a", "c"]
    joined = {"b": [3, 4, 9], "a": [1, 5], "c": [1]}
    assert conversations.hashes.tolist() == [
        hash64(b"".join(d.to_bytes(8, "big") for d in joined[name])) for name in conversations.names
    ]
    assert [conversations.records_of(g) for g in range(3)] == [[0, 2, 5], [1, 4], [3]]


def test_a_batchs_records_of_one_conversation_share_one_group_key_object():
    # Parsed from separate lines, each record holds its own copy of its session id: the keys share one, so a key
    # spill pickles it once and the decide holds it once per conversation, not once per record.
    records = [rec(f"r{i}", i, text="hi", session_id="".join(["s", str(i // 3)])) for i in range(9)]
    assert records[0].session_id is not records[1].session_id
    groups = make_step("exact_dedup").keys(records).groups
    assert groups == [f"s{i // 3}" for i in range(9)]
    assert all(groups[i] is groups[i - i % 3] for i in range(9))
    assert len({id(group) for group in groups}) == 3


def test_the_decide_counts_a_key_its_conversations_records_share_once():
    # As the decide holds them: read back from a spill, each conversation's group key one object in the list.
    records = [rec(f"r{i}", i, text="hi", session_id="".join(["s", str(i // 4)])) for i in range(4000)]
    keys = pickle.loads(pickle.dumps(make_step("exact_dedup").keys(records)))
    apart = replace(keys, groups=["".join(["s", key[1:]]) for key in keys.groups])  # every entry its own copy
    assert held_bytes(apart) - held_bytes(keys) == pytest.approx(3000 * sys.getsizeof(keys.groups[0]), rel=0.1)


COMPILED = ascii_exact_forms is not ascii_exact_forms_in_python


@pytest.mark.skipif(not COMPILED and not os.environ.get("DISTILL_REQUIRE_COMPILED"), reason="built without a C compiler")
def test_the_compiled_exact_forms_are_the_pure_python_ones():
    # Every ASCII byte, alone and among words, in texts of every length across the compiler's vector widths, and
    # texts that are not ASCII (left to normalize_text: None). CI builds the extension and requires it here.
    assert COMPILED, "DISTILL_REQUIRE_COMPILED is set, but distill/curation/_exact_forms.c was not built"
    rng = random.Random(7)
    singles = [chr(byte) for byte in range(128)]
    pieces = ["ab", "CD", "Zz", "09", " ", "  ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x1f", "\x00", "\x7f", ".,!"]
    texts = singles + [c * n for c in (" ", "\t", "A") for n in range(70)]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 90))) for _ in range(3000)]
    texts += ["É", "a é b", "  Ünïcode  "]
    compiled = ascii_exact_forms(texts)
    assert compiled == ascii_exact_forms_in_python(texts)
    assert compiled[-3:] == [None, None, None]

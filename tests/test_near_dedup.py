"""near_dedup: MinHash LSH near-duplicate removal, its survivor rule, scopes, short texts and the threshold sweep."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from helpers import read_jsonl, run_cli, run_pipeline, write_jsonl
from pydantic import ValidationError
from step_helpers import apply, edited, make_step, prose, rec

from distill.curation import clusters, minhash
from distill.curation.steps.near_dedup import UnitsInMemory, reduce_runs
from distill.plan.decide_units import UnitsOnDisk
from distill.record import order_micros
from distill.record import Record
from distill.validation import load_schema

BASE = prose(1, 200)


def test_record_scope_drops_a_near_copy_and_names_the_earliest_survivor():
    records = [
        rec("a", 1, text=" ".join(BASE)),
        rec("b", 2, text=" ".join(edited(BASE, 100))),  # 2 words of 200 changed: Jaccard ~0.9
        rec("c", 3, text=" ".join(prose(2, 200))),
    ]
    kept, dropped, stage = apply(make_step("near_dedup", scope="record"), records)
    assert kept == ["a", "c"]
    row = dropped["b"]
    assert row.reason.value == "near_duplicate"
    assert row.detail["duplicate_of"] == "a"
    assert 0.8 <= row.detail["similarity"] < 1.0
    assert stage["dropped"] == {"near_duplicate": 1}
    assert stage["verified_pairs"] == 1 and stage["near_duplicate_clusters"] == 1


def test_normalisation_makes_case_punctuation_and_diacritics_irrelevant():
    text = "Le café était très bon, et le garçon a souri; nous reviendrons demain matin avec nos amis."
    variant = "LE CAFE ETAIT TRES BON et le garcon a souri nous reviendrons demain matin avec nos amis!!!"
    kept, dropped, _ = apply(make_step("near_dedup", scope="record"), [rec("a", 1, text=text), rec("b", 2, text=variant)])
    assert kept == ["a"] and dropped["b"].detail["similarity"] == 1.0


def test_threshold_decides_how_similar_is_duplicate():
    records = [rec("a", 1, text=" ".join(BASE)), rec("b", 2, text=" ".join(edited(BASE, 12)))]  # Jaccard ~0.4-0.6
    assert apply(make_step("near_dedup", scope="record", threshold=0.8), records)[0] == ["a", "b"]
    assert apply(make_step("near_dedup", scope="record", threshold=0.3), records)[0] == ["a"]


def test_keep_highest_reward_keeps_the_best_scored_copy_ties_by_created_at_then_id():
    copies = [" ".join(edited(BASE, 100, seed=s)) for s in range(4)]
    records = [
        rec("a", 1, text=copies[0], reward=0.2),
        rec("b", 2, text=copies[1], reward=0.9),
        rec("c", 2, text=copies[2], reward=0.9),
        rec("d", 0, text=copies[3]),
    ]
    kept, dropped, _ = apply(make_step("near_dedup", scope="record", keep="highest_reward"), records)
    assert kept == ["b"]
    assert {row.detail["duplicate_of"] for row in dropped.values()} == {"b"}
    kept_first, _, _ = apply(make_step("near_dedup", scope="record", keep="first"), records)
    assert kept_first == ["d"]


def test_short_texts_are_compared_exactly_not_collapsed():
    replies = ["ok", "OK!", "okay", "thanks", "yes please", "no", "sure thing mate"]
    records = [rec(f"r{i}", i, text=text) for i, text in enumerate(replies)]
    kept, dropped, _ = apply(make_step("near_dedup", scope="record"), records)
    assert kept == ["r0", "r2", "r3", "r4", "r5", "r6"]
    assert dropped["r1"].detail == {"duplicate_of": "r0", "similarity": 1.0}


def test_empty_punctuation_only_and_missing_text_are_kept_untouched():
    records = [rec("a", 1, text=""), rec("b", 2, text="!!!"), rec("c", 3), rec("d", 4, text="!!!"), rec("e", 5, text="")]
    kept, dropped, _ = apply(make_step("near_dedup", scope="record"), records)
    assert kept == ["a", "b", "c", "d", "e"] and dropped == {}


def test_roles_limit_what_is_compared_and_roles_never_match_each_other():
    text = " ".join(BASE)
    records = [
        rec("u1", 1, role="user", text=text),
        rec("a1", 2, role="assistant", text=text),
        rec("u2", 3, role="user", text=text),
    ]
    kept, dropped, _ = apply(make_step("near_dedup", scope="record"), records)
    assert kept == ["u1", "a1"] and dropped["u2"].detail["duplicate_of"] == "u1"
    kept, _, _ = apply(make_step("near_dedup", scope="record", roles=["assistant"]), records)
    assert kept == ["u1", "a1", "u2"]


def test_group_scope_drops_every_record_of_a_near_duplicate_conversation():
    question, answer = " ".join(prose(3, 60)), " ".join(prose(4, 150))
    records = [
        rec("u1", 1, session_id="s1", role="user", text=question),
        rec("a1", 2, session_id="s1", role="assistant", text=answer),
        rec("u2", 3, session_id="s2", role="user", text=question),
        rec("a2", 4, session_id="s2", role="assistant", text=" ".join(edited(answer.split(), 80))),
        # same question, a different answer: not the same conversation
        rec("u3", 5, session_id="s3", role="user", text=question),
        rec("a3", 6, session_id="s3", role="assistant", text=" ".join(prose(5, 150))),
    ]
    kept, dropped, _ = apply(make_step("near_dedup"), records)
    assert kept == ["u1", "a1", "u3", "a3"]
    assert {dropped[r].detail["duplicate_of"] for r in ("u2", "a2")} == {"s1"}


def test_survivors_do_not_depend_on_batching_or_input_order():
    records = [rec(f"r{i}", i, text=" ".join(edited(BASE, 60, seed=i))) for i in range(8)]
    records += [rec(f"x{i}", 20 + i, text=" ".join(prose(10 + i, 100))) for i in range(8)]
    results = [
        apply(make_step("near_dedup", scope="record"), ordering, batch_size)
        for ordering in (records, records[::-1])
        for batch_size in (1, 3, 100)
    ]
    kept, dropped, _ = results[0]
    assert kept[0] == "r0" and all(x in kept for x in [f"x{i}" for i in range(8)])
    for other_kept, other_dropped, _ in results[1:]:
        assert other_kept == kept
        assert {k: v.detail for k, v in other_dropped.items()} == {k: v.detail for k, v in dropped.items()}


@pytest.mark.parametrize("longest", [1, 3, 64, 65, 300])
def test_conversation_signatures_are_the_minimum_over_their_records_whatever_the_run_lengths(longest):
    rng = np.random.default_rng(longest)
    lengths = rng.integers(1, 6, 40)
    lengths[7] = longest
    rows = rng.integers(0, 2**16, (int(lengths.sum()), 16)).astype(np.uint16)
    order = rng.permutation(len(rows))  # the records of one conversation are anywhere in the input
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    expected = np.stack([rows[order[start : start + length]].min(axis=0) for start, length in zip(starts, lengths)])
    assert (reduce_runs(np.minimum, rows, order, starts) == expected).all()


def test_bands_and_rows_must_come_together_and_fit_num_perm():
    with pytest.raises(ValidationError, match="both bands and rows"):
        make_step("near_dedup", bands=4)
    with pytest.raises(ValidationError, match="exceeds num_perm"):
        make_step("near_dedup", bands=40, rows=8, num_perm=256)
    step = make_step("near_dedup", bands=16, rows=8)
    assert (step.bands, step.rows) == (16, 8)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("near")
    rows = []
    for s in range(6):
        answer = BASE if s < 3 else prose(100 + s, 200)
        rows.append({"id": f"u{s}", "session_id": f"s{s}", "role": "user", "text": "please summarise", "created_at": s * 10})
        rows.append({"id": f"a{s}", "session_id": f"s{s}", "role": "assistant", "created_at": s * 10 + 1,
                     "text": " ".join(edited(answer, 100, seed=s) if s else answer), "category": "accepted"})
    return write_jsonl(root / "logs.jsonl", rows)


def test_pipeline_quarantines_near_duplicates_with_schema_valid_rows(tmp_path, logs):
    result = run_pipeline(tmp_path, [f"source.path={logs}", "split=none", "++curation.steps.near_dedup.threshold=0.8"])
    quarantine = read_jsonl(tmp_path / "quarantine.jsonl")
    near = [row for row in quarantine if row["reason"] == "near_duplicate"]
    assert sorted(row["record_id"] for row in near) == ["a1", "a2", "u1", "u2"]
    assert {row["detail"]["duplicate_of"] for row in near} == {"s0"}
    for row in quarantine:
        jsonschema.validate(row, load_schema("quarantine_row"))
    jsonschema.validate(result.manifest, load_schema("manifest"))
    stage = next(s for s in result.manifest["stages"] if s["step"] == "near_dedup")
    assert stage["dropped"] == {"near_duplicate": 4} and stage["bands"] * stage["rows"] <= 256


def test_cli_sweeps_the_threshold_one_output_dir_per_value(tmp_path, logs):
    sweep = tmp_path / "sweep"
    done = run_cli(
        ["-m", f"source.path={logs}", "split=none", "++curation.steps.near_dedup.threshold=0.7,0.8,0.9",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    thresholds = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
        manifest = json.loads((job / "manifest.json").read_text())
        thresholds[manifest["config"]["curation"]["steps"]["near_dedup"]["threshold"]] = manifest["counts"]["examples"]
    assert sorted(thresholds) == [0.7, 0.8, 0.9]
    assert all(examples >= 4 for examples in thresholds.values())


@pytest.mark.parametrize("scope", ["record", "group"])
@pytest.mark.parametrize("keep", ["first", "highest_reward"])
def test_units_left_on_disk_in_buckets_decide_what_one_pass_in_memory_decides(tmp_path, scope, keep):
    """The plan decides near_dedup a partition bucket at a time, its units' signatures and names on disk
    (`UnitsOnDisk`): the drops and the figures are those of all the units clustered in memory at once, whatever
    bucket holds the copies, whichever survives, and with created_at ties broken by id across buckets."""
    originals = [prose(seed, 150) for seed in range(12)]
    records = []
    for conversation in range(36):
        base = originals[conversation % 12]
        # Copies of a conversation fall in other buckets (conversation % 3 below); some share a created_at.
        words = base if conversation % 4 == 0 else edited(base, 60 + conversation, seed=conversation)
        for turn in range(2):
            records.append(rec(
                f"r{conversation:02d}-{turn}", (conversation * 7) % 20, session_id=f"s{conversation:02d}",
                role="user" if turn == 0 else "assistant", text=" ".join(words[turn * 75 : (turn + 1) * 75]),
                reward=float((conversation * 5) % 7) if turn else None,
            ))
    step = make_step("near_dedup", scope=scope, keep=keep)
    ordered = sorted(records, key=Record.order_key)

    def micros_and_firsts(units, batch):
        firsts = [batch[i] for i in units.first.tolist()]
        return np.array([order_micros(r.created_at) for r in firsts], dtype=np.int64), [r.id for r in firsts]

    in_memory = UnitsInMemory(step.units(step.keys(ordered)))
    expected = step.decide_units(in_memory, in_memory.units.rewards, in_memory)
    expected_figures = dict(step.figures)
    assert len(expected) >= 12 and expected_figures["near_duplicate_clusters"] >= 6

    step.figures.clear()
    on_disk = UnitsOnDisk(tmp_path / "units", compress=True)
    for bucket in range(3):
        batch = [r for r in ordered if int(r.session_id[1:]) % 3 == bucket]
        keys = step.keys(batch)
        units = step.units(keys)
        micros, first_ids = micros_and_firsts(units, [r for r in batch if r.id in set(keys.ids)])
        on_disk.add(units.signatures, units.names, units.last, micros, first_ids, units.rewards)
    on_disk.number()
    on_disk.index_bands(step.band_keys)
    found = step.decide_units(on_disk, on_disk.values, on_disk)
    on_disk.remove()
    assert found == expected
    assert step.figures == expected_figures
    assert not list((tmp_path / "units").iterdir())


@pytest.mark.parametrize("width", [8, 64, 256])
def test_densify_fills_each_empty_slot_from_the_first_filled_slot_of_its_probe_sequence(width):
    """Optimal densification, checked slot by slot against its definition: an empty slot takes the value of the
    first filled slot along its fixed probe sequence; a row with no value stays empty; rows as sparse as one value
    and as full as every slot, in one call larger than a pass."""
    rng = np.random.default_rng(width)
    count = minhash._DENSIFY_ROWS + 37
    fill = rng.choice([0.0, 0.01, 0.1, 0.5, 0.9, 1.0], size=(count, 1))
    raw = np.where(rng.random((count, width)) < fill, rng.integers(0, 60000, (count, width)), minhash.EMPTY)
    raw = raw.astype(np.uint16)
    raw[5] = minhash.EMPTY
    raw[5, width // 2] = 123
    probes = minhash._probe_table(width)
    expected = raw.copy()
    for row in range(count):
        filled = np.flatnonzero(raw[row] != minhash.EMPTY)
        if not len(filled):
            continue
        for slot in np.flatnonzero(raw[row] == minhash.EMPTY).tolist():
            hits = np.flatnonzero(raw[row, probes[:, slot]] != minhash.EMPTY)
            source = probes[hits[0], slot] if len(hits) else filled[0]
            expected[row, slot] = raw[row, source]
    assert np.array_equal(minhash.densify(raw), expected)
    assert (minhash.densify(raw)[5] == 123).all()


def test_pairs_added_band_by_band_are_the_distinct_pairs_of_all_bands():
    """Candidate pairs join the distinct ones band by band (`clusters.with_pairs`), in either orientation and
    repeated: the result is every distinct unordered pair once, sorted, as one pass over all bands would give."""
    rng = np.random.default_rng(5)
    count = 300
    codes = np.empty(0, np.int64)
    everything = set()
    for _ in range(12):
        left = rng.integers(0, count, 400)
        right = rng.integers(0, count, 400)
        keep = left != right
        codes = clusters.with_pairs(codes, left[keep], right[keep], count)
        everything |= {(min(a, b), max(a, b)) for a, b in zip(left[keep].tolist(), right[keep].tolist())}
    smaller, larger = clusters.pairs_of(codes, count)
    assert list(zip(smaller.tolist(), larger.tolist())) == sorted(everything)
    assert len(clusters.with_pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), count)) == 0

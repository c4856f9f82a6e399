"""Grouping keys and the group-disjoint, seed-stable hash split."""

from __future__ import annotations

import hashlib

import pytest
from helpers import read_jsonl, run_pipeline, write_jsonl

from distill.errors import DistillError
from distill.grouping import GROUP_KINDS, Group, group_records, key_function
from distill.record import Record
from distill.split import EVAL, TRAIN, SplitParams, assign_sides, side_of


def test_every_documented_group_key_has_a_config(tmp_path):
    from importlib import resources

    options = {p.name.removesuffix(".yaml") for p in resources.files("distill.conf").joinpath("group").iterdir()}
    assert set(GROUP_KINDS) <= options


@pytest.mark.parametrize("kind", ["session_id", "run_id", "task_id", "tenant", "source", "bot_id", "group_id"])
def test_field_group_keys_group_by_that_field(kind):
    records = [Record(id="a", **{kind: "k1"}), Record(id="b", **{kind: "k1"}), Record(id="c", **{kind: "k2"}), Record(id="d")]
    groups = group_records(records, [], key_function(kind))
    assert sorted(sorted(r.id for r in g.records) for g in groups) == [["a", "b"], ["c"], ["d"]]


def test_group_none_makes_every_record_its_own_group():
    records = [Record(id="a", session_id="s"), Record(id="b", session_id="s")]
    assert len(group_records(records, [], key_function("none"))) == 2


def test_external_id_prefix_uses_the_delimiter():
    records = [Record(id=i, external_id=e) for i, e in [("1", "doc-7#chunk-1"), ("2", "doc-7#chunk-2"), ("3", "doc-8#chunk-1")]]
    assert {g.key for g in group_records(records, [], key_function("external_id_prefix", "#"))} == {"doc-7", "doc-8"}
    assert len(group_records(records, [], key_function("external_id_prefix", "/"))) == 3


def test_external_id_prefix_end_to_end_gives_one_example_per_document(tmp_path):
    rows = []
    for i, ext in enumerate(["doc-7#chunk-1", "doc-7#chunk-2", "doc-8#chunk-1"]):
        rows.append({"id": f"u{i}", "external_id": ext, "role": "user", "text": f"q{i}", "created_at": i})
        rows.append({"id": f"a{i}", "external_id": ext, "role": "assistant", "text": f"a{i}", "created_at": i + 0.5})
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_pipeline(tmp_path / "out", [f"source.path={path}", "group=external_id_prefix", "split=none"])
    assert len(read_jsonl(tmp_path / "out" / "sft.jsonl")) == 2
    assert result.manifest["counts"]["examples"] == 2


def test_split_hash_is_sha256_of_seed_and_key_so_it_is_the_same_everywhere():
    # The documented rule, computed independently: eval when sha256(seed \x1f key)[:8] / 2**64 < eval_fraction.
    for key in ["session-1", "session-2", "naïve-ключ"]:
        value = int.from_bytes(hashlib.sha256(f"7\x1f{key}".encode()).digest()[:8], "big") / 2**64
        assert side_of(key, 7, 0.5) == (EVAL if value < 0.5 else TRAIN)


def make_groups(n):
    return [Group(f"session-{i}", [Record(id=f"r{i}", session_id=f"session-{i}")]) for i in range(n)]


def test_split_is_deterministic_group_disjoint_and_close_to_the_fraction():
    groups = make_groups(200)
    params = SplitParams(kind="hash", eval_fraction=0.2, seed=3)
    first = assign_sides(groups, params, None)
    second = assign_sides(make_groups(200), params, None)
    assert [g.key for g in first[EVAL]] == [g.key for g in second[EVAL]]
    assert not {g.key for g in first[EVAL]} & {g.key for g in first[TRAIN]}
    assert len(first[EVAL]) + len(first[TRAIN]) == 200
    assert abs(len(first[EVAL]) / 200 - 0.2) <= 0.1


def test_different_seeds_give_different_partitions():
    groups = make_groups(200)
    a = assign_sides(groups, SplitParams(kind="hash", eval_fraction=0.5, seed=1), None)
    b = assign_sides(groups, SplitParams(kind="hash", eval_fraction=0.5, seed=2), None)
    assert {g.key for g in a[EVAL]} != {g.key for g in b[EVAL]}


def test_split_by_another_key_that_would_cross_groups_is_an_error_naming_the_group():
    records = [Record(id=f"r{i}", session_id="s-crossing", run_id=f"run-{i}") for i in range(40)]
    groups = group_records(records, [], key_function("session_id"))
    params = SplitParams(kind="hash", eval_fraction=0.5, seed=0, by="run_id")
    with pytest.raises(DistillError, match="s-crossing"):
        assign_sides(groups, params, key_function("run_id"))


def test_split_by_a_key_constant_within_groups_is_allowed(tmp_path):
    rows = []
    for i in range(30):
        rows.append({"id": f"u{i}", "session_id": f"s{i}", "tenant": f"t{i % 3}", "role": "user", "text": f"q{i}", "created_at": i})
        rows.append({"id": f"a{i}", "session_id": f"s{i}", "tenant": f"t{i % 3}", "role": "assistant", "text": f"a{i}", "created_at": i + 0.5})
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_pipeline(tmp_path / "out", [f"source.path={path}", "split.by=tenant", "split.eval_fraction=0.5"])
    tenants = {
        side: {line["messages"][0]["content"] for line in read_jsonl(tmp_path / "out" / f"sft.{side}.jsonl")}
        for side in ("train", "eval")
    }
    assert result.manifest["split"]["by"] == "tenant"
    by_tenant = {side: {int(q[1:]) % 3 for q in questions} for side, questions in tenants.items()}
    assert not by_tenant["train"] & by_tenant["eval"]


def test_split_none_writes_one_file(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "u", "role": "user", "text": "q"}, {"id": "a", "role": "assistant", "text": "a"}])
    result = run_pipeline(tmp_path / "out", [f"source.path={path}", "split=none", "group=none"])
    assert "sft.jsonl" in [o["path"] for o in result.manifest["outputs"]]
    assert not (tmp_path / "out" / "sft.train.jsonl").exists()

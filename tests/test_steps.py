"""Each curation step: what it keeps, what it drops and why, and that it runs over batches."""

from __future__ import annotations

import pytest

import step_helpers
from step_helpers import CONTEXT, apply, make_step

from distill.curation.chain import run_chain
from distill.quarantine import Drop, Ledger
from distill.record import Record
from distill.curation.steps import STEPS


def rec(id, **fields):
    """A record timed by the last digit of its id, so ids read in time order."""
    return step_helpers.rec(id, int(id[-1]) if id[-1].isdigit() else 0, **fields)


def test_lifecycle_drops_retired_statuses_and_superseded_records():
    records = [
        rec("a1", lifecycle_status="active"),
        rec("a2"),
        *(rec(f"s{i}", lifecycle_status=s) for i, s in enumerate(["tombstoned", "expired", "retired", "superseded", "contradicted"])),
        rec("n1", lifecycle_status="active", superseded_by_id="a1"),
    ]
    kept, dropped, report = apply(make_step("lifecycle"), records)
    assert kept == ["a1", "a2"]
    assert {row.reason.value for row in dropped.values()} == {"lifecycle"}
    assert "superseded by a1" in dropped["n1"].errors[0]
    assert report["dropped"] == {"lifecycle": 6}


def test_lifecycle_statuses_are_configurable():
    records = [rec("e1", lifecycle_status="expired"), rec("t1", lifecycle_status="tombstoned")]
    kept, _, _ = apply(make_step("lifecycle", statuses=["tombstoned"]), records)
    assert kept == ["e1"]


def test_non_empty_text_drops_empty_and_whitespace_but_keeps_tool_calls():
    calls = [{"type": "function", "function": {"name": "f", "arguments": {}}}]
    records = [rec("a1", text="hi"), rec("a2", text=""), rec("a3", text=" \n\t"), rec("a4"), rec("a5", tool_calls=calls)]
    kept, dropped, _ = apply(make_step("non_empty_text"), records)
    assert kept == ["a1", "a5"]
    assert {row.reason.value for row in dropped.values()} == {"empty_content"}


def test_min_reward_drops_only_present_rewards_below_threshold():
    records = [rec("a1", reward=0.9), rec("a2", reward=0.1), rec("a3"), rec("a4", reward=0.5)]
    kept, dropped, _ = apply(make_step("min_reward", threshold=0.5), records)
    assert kept == ["a1", "a3", "a4"]
    assert dropped["a2"].reason.value == "below_min_reward"


def test_category_gate_allows_listed_categories_and_can_require_one():
    records = [rec("a1", category="accepted"), rec("a2", category="rejected"), rec("a3"), rec("a4", category="partially_accepted")]
    kept, dropped, _ = apply(make_step("category_gate", allowed=["accepted", "partially_accepted"]), records)
    assert kept == ["a1", "a3", "a4"] and dropped["a2"].reason.value == "category_disallowed"
    kept, _, _ = apply(make_step("category_gate", allow_missing=False), records)
    assert kept == ["a1"]


def test_exact_dedup_record_scope_normalises_and_keeps_the_first():
    records = [
        rec("a3", role="assistant", text="Hello   World"),
        rec("a1", role="assistant", text="hello world"),
        rec("a2", role="assistant", text="ｈｅｌｌｏ world"),
        rec("a4", role="user", text="hello world"),
        rec("a5", role="assistant", text="hello world!"),
    ]
    kept, dropped, _ = apply(make_step("exact_dedup", scope="record"), records)
    assert kept == ["a1", "a4", "a5"]
    assert dropped["a2"].detail == {"duplicate_of": "a1"} and dropped["a3"].reason.value == "duplicate"


def test_exact_dedup_record_scope_can_be_limited_to_roles():
    records = [rec("a1", role="user", text="same"), rec("a2", role="user", text="same")]
    kept, _, _ = apply(make_step("exact_dedup", scope="record", roles=["assistant"]), records)
    assert kept == ["a1", "a2"]


def test_exact_dedup_group_scope_drops_whole_repeated_conversations_only():
    original = [rec("a1", session_id="s1", role="user", text="q"), rec("a2", session_id="s1", role="assistant", text="A")]
    copy = [rec("b3", session_id="s2", role="user", text="Q"), rec("b4", session_id="s2", role="assistant", text="a")]
    partial = [rec("c5", session_id="s3", role="user", text="q"), rec("c6", session_id="s3", role="assistant", text="other")]
    kept, dropped, _ = apply(make_step("exact_dedup"), [*copy, *partial, *original])
    assert kept == ["a1", "a2", "c5", "c6"]
    assert set(dropped) == {"b3", "b4"} and dropped["b3"].detail == {"duplicate_of": "s1"}


def test_exact_dedup_is_the_same_for_any_batch_size():
    records = [rec(f"r{i}", session_id=f"s{i % 3}", role="user", text=f"t{i % 2}") for i in range(9)]
    step = make_step("exact_dedup", scope="record")
    assert apply(step, records, batch_size=1)[0] == apply(step, records, batch_size=100)[0]


def test_two_tunings_of_one_kind_coexist_under_different_names():
    strict = make_step("min_reward", name="strict_reward", threshold=0.8)
    loose = make_step("min_reward", name="loose_reward", threshold=0.2)
    ledger = Ledger()
    records = [rec("a1", reward=0.1), rec("a2", reward=0.5), rec("a3", reward=0.9)]
    kept, _, reports = run_chain([loose, strict], records, ledger, 2)
    assert [r.id for r in kept] == ["a3"]
    assert [(r.step, dict(r.dropped)) for r in reports] == [
        ("loose_reward", {"below_min_reward": 1}),
        ("strict_reward", {"below_min_reward": 1}),
    ]


def test_steps_receive_batches_not_single_records():
    seen = []
    cls = STEPS.get("non_empty_text")

    class Spy(cls):
        def map_batch(self, batch):
            seen.append(len(batch))
            return super().map_batch(batch)

    step = Spy("spy", cls.Params(), CONTEXT)
    run_chain([step], [rec(f"r{i}", text="x") for i in range(10)], Ledger(), 4)
    assert seen == [4, 4, 2]


def test_every_step_documents_its_reasons():
    for kind in STEPS.kinds():
        cls = STEPS.get(kind)
        assert cls.__doc__ and cls.reasons, kind
        for reason in cls.reasons:
            assert reason.value in cls.__doc__, (kind, reason)


def test_unknown_step_params_are_rejected():
    with pytest.raises(Exception, match="threshhold"):
        STEPS.get("min_reward").Params.model_validate({"threshhold": 0.5})


def test_drop_carries_a_reason_from_the_closed_vocabulary():
    with pytest.raises(ValueError):
        from distill.reasons import Reason

        Drop(Reason("made_up"))

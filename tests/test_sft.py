"""Chat SFT: conversation order, alternatives, gaps, the firewall and tool use."""

from __future__ import annotations

import pytest
from helpers import read_jsonl, run_pipeline, write_jsonl


def turn(id, role, text, t, **fields):
    return {"id": id, "session_id": fields.pop("session_id", "s1"), "role": role, "text": text, "created_at": t, **fields}


def export(tmp_path, rows, *overrides):
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_pipeline(tmp_path / "out", [f"source.path={path}", "split=none", *overrides])
    lines = read_jsonl(tmp_path / "out" / "sft.jsonl")
    quarantine = {row["record_id"]: row for row in read_jsonl(tmp_path / "out" / "quarantine.jsonl")}
    return lines, quarantine, result


def contents(line):
    return [m["content"] for m in line["messages"]]


def test_a_session_written_out_of_order_becomes_one_line_in_time_order(tmp_path):
    rows = [turn("c", "user", "thanks!", 30), turn("a", "user", "how do I sort a list?", 10), turn("b", "assistant", "use sorted()", 20)]
    (line,), quarantine, _ = export(tmp_path, rows)
    assert contents(line) == ["how do I sort a list?", "use sorted()", "thanks!"]
    assert [m["role"] for m in line["messages"]] == ["user", "assistant", "user"]
    assert line["provenance"]["record_ids"] == ["a", "b", "c"]
    assert line["provenance"]["session_id"] == "s1"
    assert line["provenance"]["created_at_start"] < line["provenance"]["created_at_end"]
    assert line["id"].startswith("sft-") and not quarantine


def test_best_of_n_keeps_only_the_best_alternative(tmp_path):
    rows = [turn("q", "user", "prompt", 1)] + [
        turn(f"alt{i}", "assistant", f"answer {i}", 2 + i, group_id="g1", reward=r, category="accepted")
        for i, r in enumerate([0.3, 0.9, 0.5, 0.1])
    ]
    (line,), quarantine, _ = export(tmp_path, rows)
    assert contents(line) == ["prompt", "answer 1"]
    assert line["reward"] == 0.9
    assert {k: v["reason"] for k, v in quarantine.items()} == dict.fromkeys(["alt0", "alt2", "alt3"], "not_selected")


def test_label_chosen_beats_reward_and_ties_go_to_the_earliest(tmp_path):
    rows = [
        turn("q", "user", "prompt", 1),
        turn("x", "assistant", "high reward", 2, group_id="g", reward=0.99),
        turn("y", "assistant", "chosen", 3, group_id="g", label="chosen"),
        turn("q2", "user", "again", 4),
        turn("z1", "assistant", "tie early", 5, group_id="h", reward=0.5),
        turn("z2", "assistant", "tie late", 6, group_id="h", reward=0.5),
    ]
    (line,), _, _ = export(tmp_path, rows)
    assert contents(line) == ["prompt", "chosen", "again", "tie early"]


@pytest.mark.parametrize(
    ("policy", "expected", "reasons"),
    [
        ("cut", ["q1", "good"], {"q2": "after_gap", "q3": "after_gap", "good2": "after_gap"}),
        ("keep", ["q1", "good", "q2", "q3", "good2"], {}),
        ("drop_group", None, {"q1": "after_gap", "good": "after_gap", "q2": "after_gap", "q3": "after_gap", "good2": "after_gap"}),
    ],
)
def test_a_dropped_turn_leaves_a_gap_handled_by_on_gap(tmp_path, policy, expected, reasons):
    rows = [
        turn("u1", "user", "q1", 1),
        turn("a1", "assistant", "good", 2, category="accepted"),
        turn("u2", "user", "q2", 3),
        turn("a2", "assistant", "bad", 4, category="rejected"),
        turn("u3", "user", "q3", 5),
        turn("a3", "assistant", "good2", 6, category="accepted"),
    ]
    lines, quarantine, _ = export(tmp_path, rows, f"task.on_gap={policy}")
    assert quarantine.pop("a2")["reason"] == "unsafe_sft_category"
    by_text = {row["record"]["text"]: row["reason"] for row in quarantine.values()}
    assert by_text == reasons
    if expected is None:
        assert lines == []
    else:
        assert contents(lines[0]) == expected


def test_a_turn_dropped_by_curation_also_leaves_a_gap(tmp_path):
    rows = [
        turn("u1", "user", "q1", 1),
        turn("a1", "assistant", "a1", 2),
        turn("u2", "user", "q2", 3),
        turn("a2", "assistant", "old answer", 4, lifecycle_status="superseded"),
        turn("u3", "user", "q3", 5),
    ]
    (line,), quarantine, _ = export(tmp_path, rows)
    assert contents(line) == ["q1", "a1"]
    assert quarantine["a2"]["reason"] == "lifecycle" and quarantine["a2"]["step"] == "lifecycle"
    assert quarantine["u2"]["reason"] == quarantine["u3"]["reason"] == "after_gap"


def test_a_losing_alternative_is_no_gap(tmp_path):
    rows = [
        turn("u1", "user", "q1", 1),
        turn("a1", "assistant", "bad", 2, group_id="g", category="rejected"),
        turn("a2", "assistant", "good", 3, group_id="g", category="accepted"),
        turn("u2", "user", "q2", 4),
        turn("a3", "assistant", "good2", 5),
    ]
    (line,), quarantine, _ = export(tmp_path, rows)
    assert contents(line) == ["q1", "good", "q2", "good2"]
    assert list(quarantine) == ["a1"]


@pytest.mark.parametrize(
    ("overrides", "allowed"),
    [
        ([], {"accepted", None}),
        (["task.include_partial=true"], {"accepted", "partially_accepted", None}),
        (["task.require_category=true"], {"accepted"}),
        (["task.include_partial=true", "task.require_category=true"], {"accepted", "partially_accepted"}),
    ],
)
def test_the_firewall_never_lets_rejected_or_review_records_through(tmp_path, overrides, allowed):
    categories = ["accepted", "partially_accepted", "rejected", "needs_human_review", None]
    rows = []
    for i, category in enumerate(categories):
        rows.append(turn(f"u{i}", "user", f"question {i}", 1, session_id=f"s{i}"))
        extra = {"category": category} if category else {}
        rows.append(turn(f"a{i}", "assistant", f"answer {i}", 2, session_id=f"s{i}", **extra))
    lines, quarantine, _ = export(tmp_path, rows, *overrides)
    exported = {c for line in lines for c in line["provenance"]["categories"][1:]}
    assert exported == allowed
    for i, category in enumerate(categories):
        if category not in allowed:
            assert quarantine[f"a{i}"]["reason"] == "unsafe_sft_category"
            assert quarantine[f"a{i}"]["step"] == "firewall"
            assert quarantine[f"u{i}"]["reason"] == "no_assistant_turn"


def test_removing_every_curation_step_does_not_remove_the_firewall(tmp_path):
    rows = [turn("u", "user", "q", 1), turn("a", "assistant", "a", 2, category="rejected")]
    lines, quarantine, _ = export(tmp_path, rows, "curation=none")
    assert lines == [] and quarantine["a"]["reason"] == "unsafe_sft_category"


def test_tool_calls_and_tool_results_keep_trl_shape(tmp_path):
    call = [{"type": "function", "function": {"name": "search", "arguments": {"q": "x"}}}]
    rows = [
        turn("u", "user", "find x", 1),
        turn("a1", "assistant", "", 2, tool_calls=call),
        turn("t", "tool", "x is 42", 3, name="search"),
        turn("a2", "assistant", "x is 42", 4),
    ]
    (line,), quarantine, _ = export(tmp_path, rows)
    (sent,) = line["messages"][1]["tool_calls"]
    assert sent["id"].startswith("call_") and {k: v for k, v in sent.items() if k != "id"} == call[0]
    assert line["messages"][2] == {"role": "tool", "content": "x is 42", "tool_call_id": sent["id"], "name": "search"}
    assert not quarantine
    (again,), _, _ = export(tmp_path / "again", rows)
    assert again == line  # derived call ids are deterministic


def test_calls_without_ids_pair_with_the_tool_turns_that_follow_in_order(tmp_path):
    calls = [{"type": "function", "function": {"name": n, "arguments": {}}} for n in ("a", "b")]
    rows = [
        turn("u", "user", "do a and b", 1),
        turn("c", "assistant", "", 2, tool_calls=calls),
        turn("ta", "tool", "A", 3, name="a"),
        turn("tb", "tool", "B", 4, name="b"),
        turn("f", "assistant", "done", 5),
    ]
    (line,), _, _ = export(tmp_path, rows)
    ids = [call["id"] for call in line["messages"][1]["tool_calls"]]
    assert [m["tool_call_id"] for m in line["messages"][2:4]] == ids and len(set(ids)) == 2


def test_logged_call_ids_are_kept_and_matched_by_id(tmp_path):
    calls = [{"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
             {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]
    rows = [
        turn("u", "user", "do a and b", 1),
        turn("c", "assistant", "", 2, tool_calls=calls),
        turn("tb", "tool", "B", 3, tool_call_id="call_2"),
        turn("ta", "tool", "A", 4, tool_call_id="call_1"),
        turn("f", "assistant", "done", 5),
    ]
    (line,), _, _ = export(tmp_path, rows)
    assert line["messages"][1]["tool_calls"] == calls
    assert [m["tool_call_id"] for m in line["messages"][2:4]] == ["call_2", "call_1"]


def test_a_call_without_its_reply_is_a_broken_chain_and_the_conversation_is_cut_before_it(tmp_path):
    call = [{"type": "function", "function": {"name": "search", "arguments": {"q": "x"}}}]
    rows = [
        turn("u1", "user", "hi", 1),
        turn("a1", "assistant", "hello", 2),
        turn("u2", "user", "find x", 3),
        turn("a2", "assistant", "", 4, tool_calls=call),
        turn("u3", "user", "well?", 5),
        turn("a3", "assistant", "no idea", 6),
    ]
    (line,), quarantine, _ = export(tmp_path, rows)
    assert [m["content"] for m in line["messages"]] == ["hi", "hello"]
    assert quarantine["a2"]["reason"] == "broken_tool_chain" and "has no reply" in quarantine["a2"]["errors"][0]
    assert {quarantine[i]["reason"] for i in ("u2", "u3", "a3")} == {"after_gap"}


def test_a_reply_without_its_call_is_a_broken_chain(tmp_path):
    rows = [
        turn("u1", "user", "hi", 1),
        turn("a1", "assistant", "hello", 2),
        turn("t", "tool", "stray output", 3, tool_call_id="call_9"),
        turn("a2", "assistant", "ok", 4),
    ]
    (line,), quarantine, _ = export(tmp_path, rows, "task.on_gap=keep")
    assert [m["content"] for m in line["messages"]] == ["hi", "hello", "ok"]
    assert quarantine == {"t": quarantine["t"]} and quarantine["t"]["reason"] == "broken_tool_chain"


def test_a_cut_never_ends_on_a_call_whose_reply_was_dropped(tmp_path):
    call = [{"type": "function", "function": {"name": "search", "arguments": {"q": "x"}}}]
    rows = [
        turn("u", "user", "find x", 1),
        turn("a0", "assistant", "let me look", 2),
        turn("u2", "user", "please", 3),
        turn("a1", "assistant", "", 4, tool_calls=call),
        turn("t", "tool", "", 5, name="search"),  # empty: dropped by non_empty_text
        turn("a2", "assistant", "x is 42", 6),
    ]
    (line,), quarantine, _ = export(tmp_path, rows)
    assert [m["content"] for m in line["messages"]] == ["find x", "let me look"]
    assert quarantine["t"]["reason"] == "empty_content" and quarantine["a1"]["reason"] == "after_gap"


def test_reasoning_goes_out_only_when_asked(tmp_path):
    rows = [turn("u", "user", "2+2?", 1), turn("a", "assistant", "4", 2, reasoning="two and two make four")]
    (plain,), _, _ = export(tmp_path / "plain", rows)
    (with_reasoning,), _, _ = export(tmp_path / "reasoning", rows, "task.include_reasoning=true")
    assert "reasoning_content" not in plain["messages"][1]
    assert with_reasoning["messages"][1] == {"role": "assistant", "content": "4", "reasoning_content": "two and two make four"}


def test_a_conversation_without_assistant_turn_is_no_example(tmp_path):
    rows = [turn("s", "system", "be brief", 1), turn("u", "user", "hello?", 2)]
    lines, quarantine, _ = export(tmp_path, rows)
    assert lines == [] and {v["reason"] for v in quarantine.values()} == {"no_assistant_turn"}


def test_example_ids_are_content_hashes(tmp_path):
    rows = [turn("u", "user", "q", 1), turn("a", "assistant", "a", 2)]
    (first,), _, _ = export(tmp_path / "1", rows)
    (second,), _, _ = export(tmp_path / "2", rows)
    (changed,), _, _ = export(tmp_path / "3", [rows[0], {**rows[1], "text": "b"}])
    assert first["id"] == second["id"] != changed["id"]


def random_plain_conversation(rng, number):
    """A conversation of plain turns (no tool calls, replies or alternatives) with every case the firewall and the
    gap policies tell apart: blocked and unlabelled turns, a turn curation dropped, undated and tied turns."""
    from datetime import datetime, timedelta, timezone

    from distill.grouping import Group
    from distill.record import Record

    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    categories = ["accepted", "accepted", "accepted", "partially_accepted", "rejected", "needs_human_review", None]
    turns = []
    for i in range(rng.randint(1, 7)):
        fields = {
            "id": f"c{number}t{i}",
            "session_id": f"s{number}",
            "role": rng.choice(["user", "assistant", "assistant", "system"]),
            "text": f"turn {i}",
            "created_at": None if rng.random() < 0.1 else start + timedelta(seconds=rng.choice([i, i, 0])),
            "category": rng.choice(categories),
        }
        if rng.random() < 0.3:
            fields["reward"] = rng.choice([0.5, -0.25, 1.0, 0.0])
        if rng.random() < 0.2:
            fields["name"] = "bob"
        if rng.random() < 0.2:
            fields["reasoning"] = "because"
        turns.append(Record(**fields))
    turns.sort(key=Record.order_key)
    dropped = sorted((t for t in turns if rng.random() < 0.15), key=Record.order_key)
    kept = [t for t in turns if t not in dropped]
    return Group(f"s{number}", kept, dropped)


@pytest.mark.parametrize("on_gap", ["cut", "keep", "drop_group"])
@pytest.mark.parametrize(("include_partial", "require_category", "include_reasoning"), [
    (False, False, False), (True, True, True), (False, True, False),
])
def test_plain_conversations_built_in_one_pass_give_what_the_general_way_gives(
    monkeypatch, on_gap, include_partial, require_category, include_reasoning
):
    import random

    from distill.tasks import sft

    task = sft.SftTask(sft.SftParams(
        kind="sft", on_gap=on_gap, include_partial=include_partial, require_category=require_category,
        include_reasoning=include_reasoning,
    ))
    rng = random.Random(f"{on_gap}{include_partial}{require_category}")
    groups = [random_plain_conversation(rng, n) for n in range(400)]

    def outcome(output):
        return (
            [(e.line, e.jsonl, [r.id for r in e.records], e.group_key) for e in output.examples],
            [(step, record.id, drop) for step, record, drop in output.drops],
        )

    one_pass = []
    build_plain = sft.SftTask._build_plain_conversation
    monkeypatch.setattr(sft.SftTask, "_build_plain_conversation", lambda *a: (one_pass.append(1), build_plain(*a)))
    fast = outcome(task.build(groups))
    monkeypatch.setattr(sft, "plain_turns", lambda records: False)
    general = outcome(task.build(groups))
    assert len(one_pass) == len(groups)
    assert fast == general
    cases = {"unsafe_sft_category", "no_assistant_turn"} | ({"after_gap"} if on_gap != "keep" else set())
    assert fast[0] and {drop.reason for _, _, drop in fast[1]} >= cases


def test_a_conversation_with_tool_turns_or_alternatives_is_not_plain():
    from distill.record import Record
    from distill.tasks.conversation import plain_turns

    user = Record(id="u", role="user", text="q")
    assert plain_turns([user, Record(id="a", role="assistant", text="a")])
    assert not plain_turns([user, Record(id="a", role="assistant", text="", tool_calls=[{"name": "f"}])])
    assert not plain_turns([user, Record(id="t", role="tool", text="42")])
    assert not plain_turns([user, Record(id="a", role="assistant", text="a", group_id="g")])
    assert not plain_turns([user, Record(id="r", role="user", text="a", tool_call_id="call_1")])

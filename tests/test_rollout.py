"""The `rollout` task: one line per prompt with its responses, rewards and group_id."""

from __future__ import annotations

from task_fixtures import assert_schema_valid, load_with_datasets, run_task, turn

VERIFIED = {"reward_source": "verifier", "group_id": "g1"}


def test_two_verified_responses_give_one_line_with_both_rewards_and_loads(tmp_path):
    rows = [
        turn("u1", "user", "2+2?", 0),
        turn("a1", "assistant", "4", 1, reward=1.0, **VERIFIED),
        turn("a2", "assistant", "5", 2, reward=0.0, **VERIFIED),
    ]
    run = run_task(tmp_path, rows, "task=rollout")

    assert len(run.lines) == 1
    line = run.lines[0]
    assert line["group_id"] == "g1"
    assert line["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert [(r["messages"][0]["content"], r["reward"], r["reward_source"]) for r in line["responses"]] == [
        ("4", 1.0, "verifier"),
        ("5", 0.0, "verifier"),
    ]
    assert line["provenance"]["record_ids"] == ["u1", "a1", "a2"]
    assert run.quarantine == []
    assert_schema_valid(run.lines, "rollout_line")
    loaded = load_with_datasets(run.output, tmp_path / "hf")
    assert [r["reward"] for r in loaded[0]["responses"]] == [1.0, 0.0]
    assert loaded[0]["group_id"] == "g1"


def test_group_by_group_id_and_unrewarded_responses(tmp_path):
    rows = [
        turn("u1", "user", "prompt one", 0, session_id=None, group_id="g1"),
        turn("a1", "assistant", "sampled", 1, session_id=None, group_id="g1"),
        turn("u2", "user", "prompt two", 0, session_id=None, group_id="g2"),
        turn("b1", "assistant", "graded", 1, session_id=None, group_id="g2", reward=0.5, reward_source="judge"),
    ]
    run = run_task(tmp_path, rows, "task=rollout", "group=group_id")

    by_group = {line["group_id"]: line["responses"] for line in run.lines}
    assert by_group == {
        "g1": [{"messages": [{"role": "assistant", "content": "sampled"}], "reward": None, "reward_source": None}],
        "g2": [{"messages": [{"role": "assistant", "content": "graded"}], "reward": 0.5, "reward_source": "judge"}],
    }
    assert_schema_valid(run.lines, "rollout_line")


def test_groups_without_responses_or_prompt_are_quarantined(tmp_path):
    rows = [
        turn("u1", "user", "unanswered", 0, session_id="s1"),
        turn("a1", "assistant", "no question", 0, session_id="s2", reward=1.0),
        turn("u3", "user", "answered", 0, session_id="s3"),
        turn("a3", "assistant", "answer", 1, session_id="s3"),
    ]
    run = run_task(tmp_path, rows, "task=rollout")

    assert [line["group_id"] for line in run.lines] == [None]
    assert run.reasons() == {"u1": "no_assistant_turn", "a1": "not_instructable"}

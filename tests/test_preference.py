"""The `preference` task: paired, unpaired and ranked lines from rewards, labels and ranks."""

from __future__ import annotations


import pytest
from helpers import compose_config, run_cli, write_jsonl
from task_fixtures import assert_schema_valid, load_with_datasets, run_task, turn

from distill.config import build_settings
from distill.grouping import Group
from distill.record import Record

QUESTION = turn("u1", "user", "question", 0)


@pytest.fixture
def source(tmp_path):
    """A minimal input file, for tests that only build the task."""
    return write_jsonl(tmp_path / "in.jsonl", [QUESTION])


def contents(messages):
    return [m["content"] for m in messages]


def test_paired_chosen_is_best_reward_and_rejected_worst_and_loads(tmp_path):
    rows = [
        QUESTION,
        turn("a1", "assistant", "poor answer", 1, reward=0.2),
        turn("a2", "assistant", "great answer", 2, reward=0.9),
    ]
    run = run_task(tmp_path, rows, "task=preference")

    assert len(run.lines) == 1
    line = run.lines[0]
    assert line["prompt"] == [{"role": "user", "content": "question"}]
    assert line["chosen"] == [{"role": "assistant", "content": "great answer"}]
    assert line["rejected"] == [{"role": "assistant", "content": "poor answer"}]
    assert line["provenance"]["record_ids"] == ["u1", "a2", "a1"]
    assert run.quarantine == []
    assert_schema_valid(run.lines, "preference_paired_line")
    loaded = load_with_datasets(run.output, tmp_path / "hf")
    assert loaded[0]["chosen"][0]["content"] == "great answer"
    assert loaded[0]["rejected"][0]["content"] == "poor answer"


def test_equal_rewards_give_no_pair(tmp_path):
    rows = [
        QUESTION,
        turn("a1", "assistant", "one", 1, reward=0.5),
        turn("a2", "assistant", "two", 2, reward=0.5),
        turn("v1", "user", "other question", 0, session_id="s2"),
        turn("v2", "assistant", "good", 1, session_id="s2", reward=1.0),
        turn("v3", "assistant", "bad", 2, session_id="s2", reward=0.0),
    ]
    run = run_task(tmp_path, rows, "task=preference")

    assert [contents(line["chosen"]) for line in run.lines] == [["good"]]
    assert run.reasons() == {"u1": "no_pair_signal", "a1": "no_pair_signal", "a2": "no_pair_signal"}
    assert run.result.manifest["task_counts"] == {"insufficient_pair_groups": 1}


def test_min_margin_must_be_exceeded(tmp_path):
    rows = [QUESTION, turn("a1", "assistant", "a", 1, reward=0.6), turn("a2", "assistant", "b", 2, reward=0.5)]
    assert run_task(tmp_path / "wide", rows, "task=preference", "task.min_margin=0.05").lines
    assert not run_task(tmp_path / "narrow", rows, "task=preference", "task.min_margin=0.2").lines


def test_labels_beat_rewards_and_unscored_candidates_are_unused(tmp_path):
    rows = [
        QUESTION,
        turn("a1", "assistant", "labelled chosen", 1, reward=0.1, label="chosen"),
        turn("a2", "assistant", "high reward", 2, reward=5.0),
        turn("a3", "assistant", "labelled rejected", 3, reward=0.95, label="rejected"),
        turn("a4", "assistant", "unscored", 4),
        turn("a5", "assistant", "low reward", 5, reward=-10.0),
    ]
    run = run_task(tmp_path, rows, "task=preference")

    assert [(contents(line["chosen"]), contents(line["rejected"])) for line in run.lines] == [
        (["labelled chosen"], ["labelled rejected"])
    ]
    assert run.reasons() == {"a2": "unused_candidate", "a4": "unused_candidate", "a5": "unused_candidate"}


def test_all_pairs_above_the_margin_best_chosen_first_capped(tmp_path):
    rows = [
        QUESTION,
        turn("r9", "assistant", "0.9", 1, reward=0.9),
        turn("r6", "assistant", "0.6", 2, reward=0.6),
        turn("r5", "assistant", "0.5", 3, reward=0.5),
        turn("r1", "assistant", "0.1", 4, reward=0.1),
    ]
    overrides = ["task=preference", "task.pairs=all", "task.min_margin=0.2"]

    uncapped = run_task(tmp_path / "all", rows, *overrides)
    pairs = {(line["chosen"][0]["content"], line["rejected"][0]["content"]) for line in uncapped.lines}
    assert pairs == {("0.9", "0.1"), ("0.9", "0.5"), ("0.9", "0.6"), ("0.6", "0.1"), ("0.5", "0.1")}
    assert uncapped.quarantine == []

    capped = run_task(tmp_path / "capped", rows, *overrides, "task.max_pairs_per_group=2")
    pairs = {(line["chosen"][0]["content"], line["rejected"][0]["content"]) for line in capped.lines}
    assert pairs == {("0.9", "0.1"), ("0.9", "0.5")}
    assert capped.reasons() == {"r6": "unused_candidate"}
    assert_schema_valid(capped.lines, "preference_paired_line")


def test_tool_result_after_a_candidate_stays_in_the_prompt(tmp_path):
    rows = [
        QUESTION,
        turn("a1", "assistant", "calls a tool", 1, reward=0.8),
        turn("t1", "tool", "tool output", 2, name="search"),
        turn("a2", "assistant", "guesses", 3, reward=0.1),
    ]
    run = run_task(tmp_path, rows, "task=preference")

    assert run.lines[0]["prompt"] == [
        {"role": "user", "content": "question"},
        {"role": "tool", "content": "tool output", "name": "search"},
    ]
    assert run.quarantine == []


def test_a_prompt_turn_dropped_by_curation_drops_the_group(tmp_path):
    rows = [
        QUESTION,
        turn("u2", "user", "   ", 1),
        turn("a1", "assistant", "good", 2, reward=0.9),
        turn("a2", "assistant", "bad", 3, reward=0.1),
    ]
    run = run_task(tmp_path, rows, "task=preference")

    assert run.lines == []
    assert run.reasons() == {"u2": "empty_content", "u1": "after_gap", "a1": "after_gap", "a2": "after_gap"}


def test_require_category_refuses_uncategorised_candidates(tmp_path):
    rows = [
        QUESTION,
        turn("a1", "assistant", "good", 1, reward=0.9, category="accepted"),
        turn("a2", "assistant", "bad", 2, reward=0.1, category="rejected"),
        turn("a3", "assistant", "unknown", 3, reward=0.0),
    ]
    run = run_task(tmp_path, rows, "task=preference", "task.require_category=true")

    assert contents(run.lines[0]["rejected"]) == ["bad"]
    assert run.lines[0]["provenance"]["categories"] == [None, "accepted", "rejected"]
    assert run.reasons() == {"a3": "category_disallowed"}


def test_unpaired_labels_and_rewards_against_min_reward_and_loads(tmp_path):
    rows = [
        QUESTION,
        turn("a1", "assistant", "liked", 1, label="chosen"),
        turn("a2", "assistant", "disliked", 2, label="rejected"),
        turn("a3", "assistant", "rewarded", 3, reward=0.7),
        turn("a4", "assistant", "low reward", 4, reward=0.3),
        turn("a5", "assistant", "unscored", 5),
    ]
    run = run_task(tmp_path, rows, "task=preference", "task.form=unpaired", "task.min_reward=0.5")

    labels = {line["completion"][0]["content"]: line["label"] for line in run.lines}
    assert labels == {"liked": True, "disliked": False, "rewarded": True, "low reward": False}
    assert all(contents(line["prompt"]) == ["question"] for line in run.lines)
    assert run.reasons() == {"a5": "unused_candidate"}
    assert_schema_valid(run.lines, "preference_unpaired_line")
    loaded = load_with_datasets(run.output, tmp_path / "hf")
    assert sorted(row["label"] for row in loaded) == [False, False, True, True]


def test_unpaired_rewards_without_min_reward_are_no_signal(tmp_path):
    rows = [QUESTION, turn("a1", "assistant", "rewarded", 1, reward=0.7)]
    run = run_task(tmp_path, rows, "task=preference", "task.form=unpaired")

    assert run.lines == []
    assert run.reasons() == {"u1": "no_pair_signal", "a1": "no_pair_signal"}


def test_ranked_explicit_ranks_best_first_and_loads(tmp_path):
    rows = [
        QUESTION,
        turn("a1", "assistant", "second", 1, rank=2, reward=0.9),
        turn("a2", "assistant", "first", 2, rank=1),
    ]
    run = run_task(tmp_path, rows, "task=preference", "task.form=ranked")

    candidates = run.lines[0]["candidates"]
    assert [(c["messages"][0]["content"], c["rank"], c["reward"]) for c in candidates] == [
        ("first", 1, None),
        ("second", 2, 0.9),
    ]
    assert run.lines[0]["provenance"]["record_ids"] == ["u1", "a2", "a1"]
    assert_schema_valid(run.lines, "preference_ranked_line")
    loaded = load_with_datasets(run.output, tmp_path / "hf")
    assert [c["rank"] for c in loaded[0]["candidates"]] == [1, 2]


def test_ranked_by_score_writes_positions_as_ranks(tmp_path):
    rows = [
        QUESTION,
        turn("a1", "assistant", "middle", 1, reward=0.5),
        turn("a2", "assistant", "worst", 2, label="rejected"),
        turn("a3", "assistant", "best", 3, reward=0.8),
        turn("a4", "assistant", "unscored", 4),
    ]
    run = run_task(tmp_path, rows, "task=preference", "task.form=ranked")

    candidates = run.lines[0]["candidates"]
    assert [(c["messages"][0]["content"], c["rank"]) for c in candidates] == [("best", 1), ("middle", 2), ("worst", 3)]
    assert run.reasons() == {"a4": "unused_candidate"}


def test_paired_through_the_cli(tmp_path):
    rows = [QUESTION, turn("a1", "assistant", "great", 1, reward=0.9), turn("a2", "assistant", "poor", 2, reward=0.2)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli(["task=preference", f"source.path={source}", "split=none", f"hydra.run.dir={out}"], tmp_path)

    assert done.returncode == 0, done.stderr
    assert "preference.jsonl" in done.stdout
    assert (out / "preference.jsonl").read_text("utf-8").count("\n") == 1


def test_the_old_category_pairing_flag_names_the_new_task(tmp_path, source):
    done = run_cli(["task=preference", "task.pairing=category", f"source.path={source}"], tmp_path)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "distill: error: task.pairing: category pairing is its own task now: use task=preference_category"
    ]


def test_category_pairing_is_handed_each_group_and_counts_groups_without_pairs(monkeypatch, source):
    calls = []

    def build_category_pairs(group, *, max_pairs_per_group, output):
        calls.append((group.key, max_pairs_per_group))
        return group.key == "pairs"

    monkeypatch.setattr("distill.tasks.category_pairing.build_category_pairs", build_category_pairs)
    overrides = ["task=preference_category", "task.max_pairs_per_group=3", f"source.path={source}"]
    config = compose_config(overrides)
    assert config["group"]["key"] == "task_id"
    task = build_settings(config).task
    groups = [Group("pairs", [Record(id="x")]), Group("none", [Record(id="y")])]

    output = task.build(groups)

    assert calls == [("pairs", 3), ("none", 3)]
    assert output.counts["insufficient_pair_groups"] == 1
    assert (task.schema, task.output_name) == ("preference_category_line", "preference")


def test_schema_follows_the_form(source):
    def schema_of(form):
        overrides = ["task=preference", f"task.form={form}", f"source.path={source}"]
        return build_settings(compose_config(overrides)).task.schema

    schemas = {form: schema_of(form) for form in ("paired", "unpaired", "ranked")}
    assert schemas == {
        "paired": "preference_paired_line",
        "unpaired": "preference_unpaired_line",
        "ranked": "preference_ranked_line",
    }

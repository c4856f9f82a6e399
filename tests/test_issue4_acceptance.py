"""Issue 4's acceptance criteria about SFT, rejection sampling (`min_reward`) and external_id_prefix grouping."""

from __future__ import annotations

from helpers import read_jsonl, run_cli, write_jsonl
from task_fixtures import assert_schema_valid, load_with_datasets, run_task, turn


def test_a_session_written_out_of_order_is_one_sft_line_in_time_order(tmp_path):
    rows = [
        turn("r3", "user", "thanks", 2),
        turn("r1", "user", "hello", 0),
        turn("r2", "assistant", "hi there", 1),
    ]
    run = run_task(tmp_path, rows)

    assert [[m["content"] for m in line["messages"]] for line in run.lines] == [["hello", "hi there", "thanks"]]
    assert run.lines[0]["provenance"]["record_ids"] == ["r1", "r2", "r3"]
    assert_schema_valid(run.lines, "sft_chat_line")
    loaded = load_with_datasets(run.output, tmp_path / "hf")
    assert [m["content"] for m in loaded[0]["messages"]] == ["hello", "hi there", "thanks"]


def test_min_reward_threshold_keeps_the_high_reward_record_and_drops_the_low_one(tmp_path):
    rows = [
        turn("u1", "user", "q", 0, session_id="s1"),
        turn("a1", "assistant", "good", 1, session_id="s1", reward=0.9),
        turn("u2", "user", "q", 0, session_id="s2"),
        turn("a2", "assistant", "bad", 1, session_id="s2", reward=0.1),
    ]
    run = run_task(tmp_path, rows, "++curation.steps.min_reward.threshold=0.5")

    assert [line["reward"] for line in run.lines] == [0.9]
    assert [row["record_id"] for row in run.quarantine if row["reason"] == "below_min_reward"] == ["a2"]
    assert all(row["record_id"] != "a1" for row in run.quarantine)


def test_best_of_n_keeps_only_the_best_alternative(tmp_path):
    rows = [turn("u1", "user", "write a haiku", 0)]
    for n, reward in enumerate([0.3, 0.8, 0.5, 0.1], start=1):
        rows.append(turn(f"a{n}", "assistant", f"haiku {n}", n, group_id="g1", reward=reward))
    run = run_task(tmp_path, rows)

    assert [[m["content"] for m in line["messages"]] for line in run.lines] == [["write a haiku", "haiku 2"]]
    assert run.lines[0]["reward"] == 0.8
    assert run.reasons() == {"a1": "not_selected", "a3": "not_selected", "a4": "not_selected"}


def test_external_id_prefix_groups_chunks_of_one_document(tmp_path):
    rows = [
        {"id": "c1", "external_id": "doc-7#chunk-1", "role": "user", "text": "part one", "created_at": 1},
        {"id": "c2", "external_id": "doc-7#chunk-2", "role": "assistant", "text": "part two", "created_at": 2},
        {"id": "c3", "external_id": "doc-8#chunk-1", "role": "assistant", "text": "other doc", "created_at": 3},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    grouping = ["group=external_id_prefix", "group.delimiter='#'"]
    done = run_cli([*grouping, f"source.path={source}", "split=none", f"hydra.run.dir={out}"], tmp_path)

    assert done.returncode == 0, done.stderr
    lines = read_jsonl(out / "sft.jsonl")
    assert sorted(line["provenance"]["record_ids"] for line in lines) == [["c1", "c2"], ["c3"]]

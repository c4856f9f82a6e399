"""Token budgets: a tokenizer (built here, no hub) with its chat template rendered the way transformers renders it,
`task.max_tokens` cutting or dropping conversations (`too_long`) with the ledger closed, and the length proxy with a
note when no tokenizer is configured."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from helpers import compose_config, run_cli, write_jsonl
from task_fixtures import assert_schema_valid, run_task, turn

from distill.config import build_settings
from distill.errors import ConfigError
from distill.tokens import load_tokenizer

# One line per message, the role then the content; tool calls as JSON; the end-of-sequence token last.
TEMPLATE = (
    "{{ bos_token }}\n"
    "{% for message in messages %}\n"
    "    {% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}\n"
    "        {{ raise_exception('unknown role ' + message['role']) }}\n"
    "    {% endif %}\n"
    "{{ message['role'] }}: {{ message['content'] }}"
    "{% if message['tool_calls'] is defined %} {{ message['tool_calls'] | tojson }}{% endif %}{{ '\\n' }}"
    "{% endfor %}\n"
    "{{ eos_token }}"
)


def word_tokenizer(directory: Path, template: str | None = TEMPLATE) -> Path:
    """A tokenizer directory: a WordLevel tokenizer that makes one token per word or run of punctuation, and a
    tokenizer_config.json with special tokens (one as a serialized AddedToken) and the chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"bos_token": {"content": "BOS", "special": True}, "eos_token": "EOS"}
    if template is not None:
        config["chat_template"] = template
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def conversation(*texts: str) -> list[dict]:
    """user, assistant, user, assistant, ... turns of one session, one second apart."""
    roles = ["user", "assistant"]
    return [turn(f"t{i}", roles[i % 2], text, i) for i, text in enumerate(texts)]


def test_the_chat_template_renders_as_transformers_renders_it(tmp_path):
    tokenizer = load_tokenizer(str(word_tokenizer(tmp_path / "tok")))
    messages = [
        {"role": "user", "content": "a <b> & c"},
        {"role": "assistant", "content": "d", "tool_calls": [{"type": "function", "function": {"name": "f<>"}}]},
    ]
    # trim_blocks and lstrip_blocks drop the block lines; tojson does not escape HTML; special tokens are variables.
    assert tokenizer.render(messages) == (
        "BOS\nuser: a <b> & c\nassistant: d "
        '[{"type": "function", "function": {"name": "f<>"}}]\nEOS'
    )
    assert tokenizer.count_messages([{"role": "user", "content": "one two"}]) == 6  # BOS user : one two EOS
    with pytest.raises(Exception, match="unknown role robot"):
        tokenizer.render([{"role": "robot", "content": "x"}])


def test_a_tokenizer_json_alone_counts_the_message_texts(tmp_path):
    tokenizer = load_tokenizer(str(word_tokenizer(tmp_path / "tok") / "tokenizer.json"))
    assert tokenizer.method == "tokenizer"
    assert tokenizer.count_messages([{"role": "user", "content": "one two"}, {"role": "assistant", "content": "x"}]) == 3


def test_max_tokens_cuts_after_the_last_assistant_turn_that_fits_and_the_ledger_closes(tmp_path):
    tok = word_tokenizer(tmp_path / "tok")
    # BOS + (role : words) per turn + EOS: t0..t1 = 1 + 4 + 4 + 1 = 10 tokens, t0..t3 = 18.
    rows = conversation("q1 q1", "a1 a1", "q2 q2", "a2 a2")
    run = run_task(tmp_path, rows, f"tokenizer={tok}", "task.max_tokens=12")

    assert [m["content"] for m in run.lines[0]["messages"]] == ["q1 q1", "a1 a1"]
    assert run.reasons() == {"t2": "too_long", "t3": "too_long"}
    row = next(r for r in run.quarantine if r["record_id"] == "t2")
    assert row["errors"] == ["18 tokens (chat_template) > task.max_tokens=12; cut after the last assistant turn that fits"]
    counts = run.result.manifest["counts"]
    assert counts["input_rows"] == counts["exported_records"] + counts["quarantined_rows"] == 4
    assert run.result.manifest["notes"] == []
    assert_schema_valid(run.quarantine, "quarantine_row")


def test_max_tokens_drops_a_conversation_that_does_not_fit_whole(tmp_path):
    tok = word_tokenizer(tmp_path / "tok")
    rows = [*conversation("q1 q1", "a1 a1", "q2 q2", "a2 a2"), turn("s2u", "user", "hi", 0, session_id="s2"),
            turn("s2a", "assistant", "hello", 1, session_id="s2")]
    run = run_task(tmp_path, rows, f"tokenizer={tok}", "task.max_tokens=12", "task.on_overflow=drop")

    assert [line["provenance"]["record_ids"] for line in run.lines] == [["s2u", "s2a"]]
    assert run.reasons() == {"t0": "too_long", "t1": "too_long", "t2": "too_long", "t3": "too_long"}
    stages = {stage["step"]: stage["dropped"] for stage in run.result.manifest["stages"]}
    assert stages["task"] == {"too_long": 4}


def test_a_conversation_whose_first_answer_does_not_fit_is_left_out_whole(tmp_path):
    tok = word_tokenizer(tmp_path / "tok")
    run = run_task(tmp_path, conversation("q " * 20, "a"), f"tokenizer={tok}", "task.max_tokens=12")
    assert run.lines == []
    assert run.reasons() == {"t0": "too_long", "t1": "too_long"}


def test_a_cut_never_ends_on_an_assistant_turn_whose_tool_calls_it_would_leave_unanswered(tmp_path):
    tok = word_tokenizer(tmp_path / "tok")
    call = {"id": "c1", "type": "function", "function": {"name": "f"}}
    rows = [
        turn("t0", "user", "q", 0),
        turn("t1", "assistant", "calling", 1, tool_calls=[call]),
        turn("t2", "tool", "result", 2, tool_call_id="c1"),
        turn("t3", "assistant", "done", 3),
        turn("t4", "user", "more words here", 4),
        turn("t5", "assistant", "final answer", 5),
    ]
    sent = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "calling", "tool_calls": [call]},
        {"role": "tool", "content": "result", "tool_call_id": "c1"},
        {"role": "assistant", "content": "done"},
    ]
    counter = load_tokenizer(str(tok))
    up_to_answer = counter.count_messages(sent)
    run = run_task(tmp_path / "fits", rows, f"tokenizer={tok}", f"task.max_tokens={up_to_answer}")
    assert run.lines[0]["messages"] == sent  # the chain whole, with its ids, counted as written
    assert run.reasons() == {"t4": "too_long", "t5": "too_long"}

    # Only the call itself fits: cutting there would send a call without its reply, so nothing goes out.
    up_to_call = counter.count_messages(sent[:2])
    assert up_to_call < up_to_answer
    run = run_task(tmp_path / "call", rows, f"tokenizer={tok}", f"task.max_tokens={up_to_call}")
    assert run.lines == []
    assert set(run.reasons().values()) == {"too_long"} and len(run.reasons()) == 6


def test_a_conversation_the_template_refuses_is_a_schema_violation(tmp_path):
    tok = word_tokenizer(tmp_path / "tok", "{{ raise_exception('no assistants here') }}")
    run = run_task(tmp_path, conversation("q", "a"), f"tokenizer={tok}", "task.max_tokens=100")
    assert run.reasons() == {"t0": "schema_violation", "t1": "schema_violation"}
    assert "no assistants here" in run.quarantine[0]["errors"][0]


def test_without_a_tokenizer_max_tokens_says_so_and_uses_the_length_proxy(tmp_path, caplog):
    # ceil(chars / 4) per message: "12345678" = 2 tokens, so q + a = 4 and two exchanges = 8.
    rows = conversation("12345678", "12345678", "12345678", "12345678")
    with caplog.at_level(logging.WARNING):
        run = run_task(tmp_path, rows, "task.max_tokens=5")

    assert [m["content"] for m in run.lines[0]["messages"]] == ["12345678", "12345678"]
    assert run.reasons() == {"t2": "too_long", "t3": "too_long"}
    assert "(length_proxy)" in run.quarantine[0]["errors"][0]
    [note] = run.result.manifest["notes"]
    assert note.startswith("task.max_tokens=5: no tokenizer is configured")
    assert note in caplog.text
    assert_schema_valid([run.result.manifest], "manifest")


def test_stats_count_chat_lines_with_the_template_and_records_apart(tmp_path):
    tok = word_tokenizer(tmp_path / "tok")
    run = run_task(tmp_path, conversation("q1 q1", "a1 a1"), f"tokenizer={tok}")
    section = run.stats["files"]["sft.jsonl"]
    assert (section["tokens_per_example"]["method"], section["tokens_per_example"]["max"]) == ("chat_template", 10)
    record_tokens = section["tokens_per_record"]
    assert (record_tokens["method"], record_tokens["count"], record_tokens["max"]) == ("tokenizer", 2, 2)
    assert_schema_valid([run.stats], "stats")


def test_stats_tokenizer_stays_an_alias_and_may_not_contradict_tokenizer(tmp_path):
    tok = word_tokenizer(tmp_path / "tok")
    run = run_task(tmp_path, conversation("q1 q1", "a1 a1"), f"stats.tokenizer={tok}")
    assert run.stats["files"]["sft.jsonl"]["tokens_per_example"]["method"] == "chat_template"
    other = word_tokenizer(tmp_path / "other")
    with pytest.raises(ConfigError) as error:
        build_settings(compose_config([f"tokenizer={tok}", f"stats.tokenizer={other}"]))
    assert [problem.split(":")[0] for problem in error.value.problems] == ["stats.tokenizer"]


def test_max_tokens_and_on_overflow_are_checked_by_key(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", conversation("q", "a"))
    done = run_cli([f"source.path={source}", "task.max_tokens=0", "task.on_overflow=trim"], tmp_path)
    assert done.returncode == 2
    assert [line.split(":")[2].strip() for line in done.stderr.strip().splitlines()] == [
        "task.max_tokens", "task.on_overflow",
    ]


def test_preference_and_rollout_leave_out_candidates_that_do_not_fit_with_the_prompt(tmp_path):
    tok = word_tokenizer(tmp_path / "tok")
    # With the prompt "q": BOS user : q (4) + assistant : <words> + EOS; "good"/"bad" fit 8, the long one does not.
    rows = [
        turn("u", "user", "q", 0),
        turn("good", "assistant", "fine", 1, reward=0.9, group_id="g"),
        turn("long", "assistant", "w " * 10, 2, reward=0.5, group_id="g"),
        turn("bad", "assistant", "poor", 3, reward=0.1, group_id="g"),
    ]
    paired = run_task(tmp_path / "paired", rows, "task=preference", f"tokenizer={tok}", "task.max_tokens=8")
    assert [line["provenance"]["record_ids"] for line in paired.lines] == [["u", "good", "bad"]]
    assert paired.reasons() == {"long": "too_long"}

    rollout = run_task(tmp_path / "rollout", rows, "task=rollout", f"tokenizer={tok}", "task.max_tokens=4")
    assert rollout.lines == []
    assert rollout.reasons() == dict.fromkeys(["u", "good", "long", "bad"], "too_long")
    counts = rollout.result.manifest["counts"]
    assert counts["input_rows"] == counts["quarantined_rows"] == 4


@pytest.mark.parametrize("task", [[], ["task=preference"]])
def test_budgets_on_the_sample_give_the_same_bytes_for_any_workers_and_partitions(tmp_path, task):
    from test_plan import assert_same_across_variants

    tok = word_tokenizer(tmp_path / "tok")
    files = assert_same_across_variants(tmp_path, [f"tokenizer={tok}", "task.max_tokens=120", *task])
    assert b'"too_long"' in files["quarantine.jsonl"]

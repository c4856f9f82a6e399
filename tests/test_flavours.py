"""Output flavours: each trainer's shape from the same valid lines, with the same ids, refusals with reasons."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lakehouse_fixture import run_lakehouse
from helpers import compose_config, read_jsonl, run_pipeline, write_jsonl
from task_fixtures import assert_schema_valid, run_task, turn

from distill.config import build_settings
from distill.errors import ConfigError
from distill.hashing import canonical_json
from distill.output.files import jsonl_bytes
from distill.output.flavours.openai import file_problems, line_problems
from distill.record import Record
from distill.tasks.base import jsonl_with_id, make_example

SAMPLE = Path(__file__).resolve().parents[1] / "distill" / "data" / "sample" / "agent_sessions.jsonl"

# (flavour, task overrides, the flavour's line schema) for every task shape each flavour writes.
CASES = [
    ("openai", ["task=sft"], "openai_chat_line"),
    ("openai", ["task=preference"], "openai_preference_line"),
    ("openai", ["+experiment=lakehouse_preference"], "openai_preference_line"),
    ("llamafactory", ["task=sft"], "llamafactory_sharegpt_line"),
    ("llamafactory", ["+experiment=lakehouse_instruction"], "llamafactory_alpaca_line"),
    ("llamafactory", ["task=preference"], "llamafactory_sharegpt_line"),
    ("llamafactory", ["+experiment=lakehouse_preference"], "llamafactory_sharegpt_line"),
    ("llamafactory", ["task=preference", "task.form=unpaired", "task.min_reward=0.5"], "llamafactory_sharegpt_line"),
    ("axolotl", ["task=sft"], "axolotl_chat_line"),
    ("verl", ["task=rollout"], "verl_rollout_line"),
]


def sample_with_answers(tmp_path: Path) -> Path:
    """The bundled sample, with an `answer` on every user turn of the eval harness's prompts (what a verifier
    would score against), so verl's prompts have a ground truth to map."""
    rows = []
    for raw in SAMPLE.read_bytes().splitlines():
        try:
            row = json.loads(raw)
        except ValueError:
            rows.append(raw)
            continue
        if not isinstance(row, dict):
            rows.append(raw)
            continue
        if row.get("role") == "user" and row.get("source") == "eval-harness":
            row["answer"] = f"answer-{row['id']}"
        rows.append(row)
    return write_jsonl(tmp_path / "sample.jsonl", rows)


def flavour_run(tmp_path: Path, name: str, flavour: str, overrides: list[str]):
    if "+experiment=lakehouse_instruction" in overrides or "+experiment=lakehouse_preference" in overrides:  # lakehouse shapes
        return run_lakehouse(tmp_path / name, [f"output.flavor={flavour}", *overrides])
    extra = []
    if "task=rollout" in overrides:
        extra = [f"source.path={sample_with_answers(tmp_path)}", "+source.fields.ground_truth=answer"]
    return run_pipeline(tmp_path / name, [f"output.flavor={flavour}", *overrides, *extra])


def data_files(result) -> list[str]:
    return [f for f in result.files if f.split(".")[0] in ("sft", "preference", "rollout") and ".provenance." not in f]


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return read_jsonl(path)


def without_nulls(value):
    """A Parquet row as its line was: a struct field the line left out reads back as null."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize(("flavour", "overrides", "schema"), CASES)
def test_each_flavour_writes_the_bundled_sample_for_every_task_it_supports(tmp_path, flavour, overrides, schema):
    result = flavour_run(tmp_path, "run", flavour, overrides)
    canonical = flavour_run(tmp_path, "trl", "trl", overrides)

    files = data_files(result)
    assert files and result.manifest["counts"]["examples"] > 0
    hashes = {entry["path"]: entry["sha256"] for entry in result.manifest["outputs"]}
    for name in files:
        rows = read_rows(result.output_dir / name)
        inline = "provenance" in rows[0] if rows else False
        bare = [without_nulls({k: v for k, v in row.items() if k not in ("id", "provenance")}) for row in rows]
        assert_schema_valid(bare, schema)
        if not inline:
            # The sidecar is aligned by line, holds each line's id and provenance, and is hashed as an output.
            sidecar_name = name.rsplit(".", 1)[0] + ".provenance.jsonl"
            sidecar = read_jsonl(result.output_dir / sidecar_name)
            assert len(sidecar) == len(rows)
            assert_schema_valid(sidecar, "provenance_sidecar_line")
            ids = [s["id"] for s in sidecar]
            assert hashes[sidecar_name] == hashlib.sha256((result.output_dir / sidecar_name).read_bytes()).hexdigest()
        else:
            ids = [row["id"] for row in rows]
        # An example's id comes from the canonical line: the same as in the trl files.
        trl_ids = {line["id"] for f in data_files(canonical) for line in read_jsonl(canonical.output_dir / f)}
        assert set(ids) <= trl_ids
        assert hashes[name] == hashlib.sha256((result.output_dir / name).read_bytes()).hexdigest()
    assert result.manifest["counts"]["input_rows"] == result.manifest["counts"]["exported_records"] + result.manifest[
        "counts"
    ]["quarantined_rows"]


@pytest.mark.parametrize("flavour", ["trl", "openai", "llamafactory", "axolotl", "verl"])
def test_reruns_are_byte_identical_for_every_flavour(tmp_path, flavour):
    task = {"openai": "task=preference", "verl": "task=rollout"}.get(flavour, "task=sft")
    first = flavour_run(tmp_path, "one", flavour, [task])
    second = flavour_run(tmp_path, "two", flavour, [task])
    assert first.files == second.files
    for name in first.files:
        if name != "manifest.json":
            assert (first.output_dir / name).read_bytes() == (second.output_dir / name).read_bytes(), name
    assert first.manifest["outputs"] == second.manifest["outputs"]


def config_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        build_settings(compose_config(list(overrides)))
    return str(caught.value)


def test_a_task_refuses_a_flavour_it_cannot_express_naming_the_flavours_it_can():
    message = config_error("task=preference", "task.form=ranked", "output.flavor=openai")
    assert message == "output.flavor: openai cannot express task=preference form=ranked lines; that task writes: trl"
    assert "that task writes: trl, verl" in config_error("task=rollout", "output.flavor=axolotl")
    assert "unknown output flavor kind 'megatron'" in config_error("output.flavor=megatron")


def test_context_turns_are_refused_by_flavours_that_cannot_mask_a_turn():
    partial = ["task.include_partial=true", "task.partial_turns=context"]
    assert config_error(*partial) == (
        "task.partial_turns=context: output.flavor=trl cannot mask a turn; use output.flavor=axolotl or openai"
    )
    assert "cannot mask a turn" in config_error(*partial, "output.flavor=llamafactory")
    assert "set task.include_partial=true too" in config_error("task.partial_turns=context", "output.flavor=openai")
    assert "provenance=inline: openai files take no extra keys" in config_error("output.flavor=openai", "output.provenance=inline")


PARTIAL_CHAT = [
    turn("u1", "user", "Fix the test.", 0, category="accepted"),
    turn("a1", "assistant", "Partly fixed.", 1, category="partially_accepted"),
    turn("u2", "user", "Finish it.", 2, category="accepted"),
    turn("a2", "assistant", "Done.", 3, category="accepted"),
]


def test_context_turns_are_masked_with_openai_weight_zero_and_axolotl_train_false(tmp_path):
    context = ["task.include_partial=true", "task.partial_turns=context"]
    openai = run_task(tmp_path / "o", PARTIAL_CHAT, "output.flavor=openai", *context)
    assert [m.get("weight") for m in openai.lines[0]["messages"]] == [None, 0, None, 1]
    axolotl = run_task(tmp_path / "a", PARTIAL_CHAT, "output.flavor=axolotl", *context)
    assert [m["train"] for m in axolotl.lines[0]["messages"]] == [False, False, False, True]
    trained = run_task(tmp_path / "t", PARTIAL_CHAT, "output.flavor=axolotl", "task.include_partial=true")
    assert [m["train"] for m in trained.lines[0]["messages"]] == [False, True, False, True]


def test_a_conversation_whose_only_answer_is_context_is_refused_not_written(tmp_path):
    rows = PARTIAL_CHAT[:2]
    run = run_task(tmp_path, rows, "output.flavor=openai", "task.include_partial=true", "task.partial_turns=context")
    assert run.lines == []
    assert run.reasons() == {"u1": "schema_violation", "a1": "schema_violation"}
    assert "no trained assistant message" in run.quarantine[0]["errors"][0]
    assert run.quarantine[0]["errors"][0].startswith("sft.jsonl, example sft-")


TOOL_CHAT = [
    turn("u1", "user", "Which files changed?", 0),
    turn("a1", "assistant", "", 1, tool_calls=[{"type": "function", "function": {"name": "git_diff", "arguments": {"stat": True}}}]),
    turn("t1", "tool", "billing/invoice.py | 2 +-", 2, name="git_diff"),
    turn("a2", "assistant", "Only billing/invoice.py.", 3),
]


def test_openai_tool_calls_get_ids_matched_to_their_tool_turns_and_json_arguments(tmp_path):
    first = run_task(tmp_path / "one", TOOL_CHAT, "output.flavor=openai")
    messages = first.lines[0]["messages"]
    call = messages[1]["tool_calls"][0]
    assert "content" not in messages[1]
    assert call["type"] == "function" and call["function"] == {"name": "git_diff", "arguments": '{"stat":true}'}
    assert messages[2] == {"role": "tool", "content": "billing/invoice.py | 2 +-", "tool_call_id": call["id"]}
    again = run_task(tmp_path / "two", TOOL_CHAT, "output.flavor=openai")
    assert again.lines[0]["messages"][1]["tool_calls"][0]["id"] == call["id"]  # derived, so stable
    logged = [*TOOL_CHAT[:1], {**TOOL_CHAT[1], "tool_calls": [{**TOOL_CHAT[1]["tool_calls"][0], "id": "call_7"}]}, *TOOL_CHAT[2:]]
    kept = run_task(tmp_path / "logged", logged, "output.flavor=openai")
    assert kept.lines[0]["messages"][2]["tool_call_id"] == "call_7"


def test_openai_checks_tool_turns_against_the_calls_they_answer():
    call = {"id": "call_1", "type": "function", "function": {"name": "sh", "arguments": "{}"}}
    unanswered = {"messages": [
        {"role": "user", "content": "Run it."}, {"role": "tool", "content": "exit 0", "tool_call_id": "call_9"},
        {"role": "assistant", "content": "Ran."},
    ]}
    assert line_problems(unanswered) == ["messages[1]: tool message answers no open tool call (tool_call_id 'call_9')"]
    left_open = {"messages": [
        {"role": "user", "content": "Run it."}, {"role": "assistant", "tool_calls": [call]},
        {"role": "user", "content": "Well?"}, {"role": "assistant", "content": "Ran."},
    ]}
    assert line_problems(left_open) == ["messages[2]: tool call(s) ['call_1'] have no tool message answering them"]
    bad_arguments = {"messages": [
        {"role": "user", "content": "Run it."},
        {"role": "assistant", "tool_calls": [{**call, "function": {"name": "sh", "arguments": "{not json"}}]},
    ]}
    assert line_problems(bad_arguments) == ["messages[1].tool_calls[0]: arguments must be a JSON string"]


def test_openai_file_check_reports_the_line_number_of_a_crafted_bad_line(tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}], "id": "x"}
    no_answer = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "weight": 0}]}
    path = write_jsonl(tmp_path / "train.jsonl", [good, bad, no_answer, "{not json"])
    problems = file_problems(str(path))
    assert [line for line, _ in problems] == [2, 2, 2, 3, 4]
    assert "unrecognized top-level key 'id'" in problems[0][1]
    assert "unrecognized role 'robot'" in problems[1][1]


def test_openai_refuses_an_example_over_the_token_limit_when_a_tokenizer_is_set(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    rows = [turn("u1", "user", "one two three", 0), turn("a1", "assistant", "four five", 1)]
    fits = run_task(tmp_path / "fits", rows, "output.flavor=openai", f"stats.tokenizer={tmp_path / 'tokenizer.json'}")
    assert len(fits.lines) == 1
    over = run_task(
        tmp_path / "over", rows, "output.flavor=openai", f"stats.tokenizer={tmp_path / 'tokenizer.json'}",
        "output.max_example_tokens=4",
    )
    assert over.lines == [] and "5 tokens, over the per-example limit of 4" in over.quarantine[0]["errors"][0]


def test_llamafactory_rows_and_dataset_info_name_the_file_and_its_columns(tmp_path):
    rows = [turn("s", "system", "Be brief.", 0), *TOOL_CHAT]
    run = run_task(tmp_path, rows, "output.flavor=llamafactory")
    line = run.lines[0]
    assert line["system"] == "Be brief."
    assert [t["from"] for t in line["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert json.loads(line["conversations"][1]["value"]) == [{"name": "git_diff", "arguments": {"stat": True}}]
    assert line["id"].startswith("sft-") and line["provenance"]["record_ids"] == ["s", "u1", "a1", "t1", "a2"]
    info = json.loads((run.result.output_dir / "dataset_info.json").read_text())
    assert info == {
        "distill_sft": {
            "file_name": "sft.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system"},
            "tags": {
                "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system",
            },
        }
    }


def test_llamafactory_refuses_turns_that_do_not_alternate_instead_of_letting_it_skip_them(tmp_path):
    rows = [turn("u1", "user", "a", 0), turn("u2", "user", "b", 1), turn("a1", "assistant", "c", 2)]
    run = run_task(tmp_path, rows, "output.flavor=llamafactory")
    assert run.lines == []
    assert "turn 2 is human, expected gpt or function_call" in run.quarantine[0]["errors"][0]


def test_llamafactory_preference_rows_carry_chosen_rejected_and_kto_tag(tmp_path):
    rows = [
        turn("u1", "user", "2+2?", 0),
        turn("a1", "assistant", "4", 1, reward=1.0, group_id="g"),
        turn("a2", "assistant", "5", 2, reward=0.0, group_id="g"),
    ]
    paired = run_task(tmp_path / "p", rows, "task=preference", "group=session_id", "output.flavor=llamafactory")
    assert paired.lines[0]["conversations"] == [{"from": "human", "value": "2+2?"}]
    assert (paired.lines[0]["chosen"], paired.lines[0]["rejected"]) == ({"from": "gpt", "value": "4"}, {"from": "gpt", "value": "5"})
    info = json.loads((paired.result.output_dir / "dataset_info.json").read_text())["distill_preference"]
    assert info["ranking"] is True and info["columns"]["chosen"] == "chosen"
    kto = run_task(
        tmp_path / "k", rows, "task=preference", "group=session_id", "task.form=unpaired", "task.min_reward=0.5",
        "output.flavor=llamafactory",
    )
    assert [(line["conversations"][-1]["value"], line["kto_tag"]) for line in kto.lines] == [("4", True), ("5", False)]


def test_axolotl_writes_its_datasets_block_beside_the_data(tmp_path):
    result = run_pipeline(tmp_path / "out", ["output.flavor=axolotl"])
    block = yaml.safe_load((result.output_dir / "axolotl_datasets.yaml").read_text())
    assert [d["path"] for d in block["datasets"]] == ["sft.train.jsonl"]
    assert [d["path"] for d in block["test_datasets"]] == ["sft.eval.jsonl"]
    documented = {
        "path", "ds_type", "type", "field_messages", "message_property_mappings", "message_field_training",
        "roles_to_train", "train_on_eos",
    }
    assert set(block["datasets"][0]) == documented
    assert block["datasets"][0]["type"] == "chat_template" and block["datasets"][0]["message_field_training"] == "train"


def test_verl_rows_carry_the_ground_truth_and_a_prompt_without_one_is_quarantined(tmp_path):
    rows = [
        turn("u1", "user", "2+2?", 0, session_id="s1", answer=4),
        turn("a1", "assistant", "4", 1, session_id="s1", reward=1.0),
        turn("u2", "user", "Name a prime.", 0, session_id="s2"),
        turn("a2", "assistant", "7", 1, session_id="s2"),
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_pipeline(
        tmp_path / "out",
        [f"source.path={source}", "split=none", "task=rollout", "output.flavor=verl", "+source.fields.ground_truth=answer"],
    )
    table = read_rows(result.output_dir / "rollout.parquet")
    assert table == [
        {
            "data_source": "distill",
            "prompt": [{"role": "user", "content": "2+2?", "tool_calls": None, "tool_call_id": None, "name": None}],
            "ability": "general",
            "reward_model": {"style": "rule", "ground_truth": "4"},
            "extra_info": {"index": 0, "split": "all", "id": table[0]["extra_info"]["id"], "record_ids": ["u1", "a1"]},
        }
    ]
    quarantine = {row["record_id"]: row["reason"] for row in read_jsonl(result.output_dir / "quarantine.jsonl")}
    assert quarantine == {"u2": "missing_ground_truth", "a2": "missing_ground_truth"}
    sidecar = read_jsonl(result.output_dir / "rollout.provenance.jsonl")
    assert [s["id"] for s in sidecar] == [table[0]["extra_info"]["id"]]


def test_a_trl_line_joined_with_its_sidecar_is_the_inline_line(tmp_path):
    inline = run_pipeline(tmp_path / "inline", [])
    sidecar = run_pipeline(tmp_path / "sidecar", ["output.provenance=sidecar"])
    for name in ("sft.train.jsonl", "sft.eval.jsonl"):
        lines = read_jsonl(sidecar.output_dir / name)
        side = read_jsonl(sidecar.output_dir / name.replace(".jsonl", ".provenance.jsonl"))
        assert all("provenance" not in line and "id" not in line for line in lines)
        assert [{**line, **s} for line, s in zip(lines, side)] == read_jsonl(inline.output_dir / name)


def test_only_a_flavour_that_fills_in_a_lines_place_is_left_for_the_merge_to_encode():
    # Lines of the other flavours are encoded in the partition's worker; verl's index is its place in the file.
    from distill.output.flavours.base import FLAVOURS

    assert [name for name in FLAVOURS.kinds() if FLAVOURS.get(name)().places_lines] == ["verl"]


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "héllo \"quoted\" \\ \n\t\u2028 😀"}], "reward": 0.1 + 0.2},
    {"prompt": "p", "chosen": "c", "rejected": "r", "provenance": {"z": 1, "a": [1.5e-7, None, True]}},
    {},
])
def test_a_line_spelt_out_from_its_hashed_bytes_is_the_line_the_writer_would_encode(body):
    """`make_example` keeps the canonical JSON it hashed for the id and splices the id into it: byte for byte
    what encoding the whole line gives, or None when a key sorts before `id` (then the writer encodes it)."""
    line = {**body, "provenance": body.get("provenance", {"record_ids": ["r1"]})}
    example = make_example("sft", line, [Record(id="r1", text="x")], "g")
    expected = jsonl_bytes(example.line)
    if all(key > "id" for key in line):
        assert example.jsonl == expected
    else:
        assert example.jsonl is None
    assert jsonl_with_id(canonical_json({"a": 1}), "x", {"a": 1}) is None
    assert jsonl_with_id(canonical_json({}), "x", {}) == b'{"id":"x"}\n'


@pytest.mark.parametrize("task", [["task=sft"], ["task=preference"], ["task=rollout"], ["task=rag"], ["task=sft_instruction"]])
def test_a_trl_line_written_from_its_examples_bytes_is_its_rendered_line_encoded(tmp_path, monkeypatch, task):
    """The trl flavour writes each example's own line (`Example.jsonl` where `make_example` kept its bytes) without
    rendering it (`FlavourOutput.writes_examples_as_built`): what a partition spills must be what rendering every
    line one by one (`render_side`) gives, encoded, and rendering must refuse none of them."""
    from distill.output import writers
    from distill.output.flavours import render

    checked = []
    as_built = []
    original = writers.LinePartition.add

    def checking(self: Any, examples_by_side: Any, rendered_by_side: Any) -> Any:
        flavour = self.files.flavour
        for side, examples in examples_by_side.items():
            file_name = writers.output_file_name(self.files.task.output_name, side, "jsonl")
            one_by_one, refused = render.render_side(flavour.flavour, flavour.context, flavour.provenance, examples, file_name)
            assert refused == []
            rendered = rendered_by_side.get(side)
            if rendered is None:
                as_built.append(side)
                written = [e.jsonl if e.jsonl is not None else jsonl_bytes(e.line) for e in examples]
                checked.extend(e for e in examples if e.jsonl is not None)
            else:
                written = [out.jsonl if out.jsonl is not None else jsonl_bytes(out.line) for out in rendered]
            assert written == [out.jsonl if out.jsonl is not None else jsonl_bytes(out.line) for out in one_by_one]
        return original(self, examples_by_side, rendered_by_side)

    monkeypatch.setattr(writers.LinePartition, "add", checking)
    run_pipeline(tmp_path / "run", [f"source.path={SAMPLE}", "executor.workers=1", *task])
    if task == ["task=sft"]:
        assert as_built, "the default flavour rendered SFT lines one by one"
        assert checked, "no SFT line was written from its example's bytes"

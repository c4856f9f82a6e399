"""The chat-log sources on their fixtures (tests/fixtures/logs/, written by make_chat_logs.py): the records each
format yields, the SFT lines they make, the ledger, and the same bytes from compressed copies."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import zstandard
from helpers import read_jsonl, run_pipeline

from distill.quarantine import QuarantineRow
from distill.sources import SOURCES

LOGS = Path(__file__).resolve().parent / "fixtures" / "logs"

# kind, fixture, overrides, lines (or listed items) in the file, records it yields, the line quarantined whole
FORMATS = {
    "openai_chat": ("openai_chat.jsonl", [], 6, 12, "invalid_json"),
    "anthropic_messages": ("anthropic_messages.jsonl", [], 6, 11, "schema_violation"),
    "otel_genai": ("otel_genai.jsonl", [], 4, 13, "schema_violation"),
    "sharegpt": ("sharegpt.jsonl", [], 7, 17, "schema_violation"),
    "langsmith": ("langsmith_runs.json", ["source.reward_key=correctness", "source.label_key=thumbs"], 8, 10, "schema_violation"),
    "langfuse": ("langfuse_observations.json", [], 8, 12, "schema_violation"),
}


def source_of(kind, path, **params):
    cls = SOURCES.get(kind)
    return cls(cls.Params(kind=kind, path=str(path), **params))


def parsed(kind, path=None, **params):
    source = source_of(kind, path or LOGS / FORMATS[kind][0], **params)
    rows = list(source.read())
    records = [r for r in rows if not isinstance(r, QuarantineRow)]
    return records, [r for r in rows if isinstance(r, QuarantineRow)], source


def export(tmp_path, kind, path=None, *overrides):
    fixture, fixture_overrides, *_ = FORMATS[kind]
    out = tmp_path / "out"
    result = run_pipeline(out, [f"source={kind}", f"source.path={path or LOGS / fixture}", "split=none",
                                *fixture_overrides, *overrides])
    return read_jsonl(out / "sft.jsonl"), read_jsonl(out / "quarantine.jsonl"), result


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_closes_the_ledger_counting_records_and_lines(tmp_path, kind):
    _, _, lines, records, bad_line = FORMATS[kind]
    sft, quarantine, result = export(tmp_path, kind)
    counts = result.manifest["counts"]
    assert counts["input_lines"] == lines
    assert counts["input_rows"] == records + 1 == counts["exported_records"] + counts["quarantined_rows"]
    parse_rows = [row for row in quarantine if row["step"] == "parse"]
    assert [row["reason"] for row in parse_rows] == [bad_line]
    assert sum(len(line["provenance"]["record_ids"]) for line in sft) >= counts["exported_records"]


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_exports_tool_calls_with_their_replies_and_quarantines_the_broken_chain(tmp_path, kind):
    sft, quarantine, _ = export(tmp_path, kind)
    paired = 0
    for line in sft:
        messages = line["messages"]
        for i, message in enumerate(messages):
            for call in message.get("tool_calls", []):
                replies = [m for m in messages[i + 1 :] if m["role"] == "tool" and m["tool_call_id"] == call["id"]]
                assert len(replies) == 1, f"call {call['id']} has no single reply in {line['id']}"
                paired += 1
            if message["role"] == "tool":
                assert any(c["id"] == message["tool_call_id"] for m in messages[:i] for c in m.get("tool_calls", []))
    assert paired >= 1
    assert "broken_tool_chain" in {row["reason"] for row in quarantine}


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_gives_reasoning_only_when_asked(tmp_path, kind):
    plain, _, _ = export(tmp_path / "plain", kind)
    reasoned, _, _ = export(tmp_path / "reasoned", kind, None, "task.include_reasoning=true")
    assert not any("reasoning_content" in m for line in plain for m in line["messages"])
    assert any(m.get("reasoning_content") for line in reasoned for m in line["messages"] if m["role"] == "assistant")


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_keeps_one_of_the_alternatives(tmp_path, kind):
    records, _, _ = parsed(kind, **({"reward_key": "correctness"} if kind == "langsmith" else {}))
    groups = {}
    for record in records:
        if record.group_id is not None:
            groups.setdefault(record.group_id, []).append(record)
    assert groups and all(len(members) == 2 for members in groups.values())
    _, quarantine, _ = export(tmp_path, kind)
    assert sum(row["reason"] == "not_selected" for row in quarantine) == len(groups)


def test_a_turn_repeated_by_later_calls_is_one_record():
    records, _, _ = parsed("openai_chat")
    asks = [r for r in records if r.text == "What's the weather in Paris right now?"]
    assert len(asks) == 1 and asks[0].id == "conv-paris#0001:419ba544"
    assert [r.role.value for r in sorted(records, key=lambda r: r.order_key()) if r.session_id == "conv-paris"] == [
        "system", "user", "assistant", "tool", "assistant", "user", "assistant", "assistant"]


def test_openai_choices_are_alternatives_and_completion_tokens_the_answers_tokens():
    records, _, _ = parsed("openai_chat")
    by_run = {}
    for record in records:
        if record.run_id:
            by_run.setdefault(record.run_id, []).append(record)
    assert by_run["chatcmpl-A2"][0].tokens_used == 16 and by_run["chatcmpl-A2"][0].reasoning.startswith("The tool says")
    louvre, seine = by_run["chatcmpl-A3"]
    assert louvre.group_id == seine.group_id and louvre.tokens_used is None  # n = 2: the usage is their sum
    call = by_run["chatcmpl-A1"][0].tool_calls[0]
    assert call == {"id": "call_7fQk2", "type": "function",
                    "function": {"name": "get_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}}}
    assert by_run["chatcmpl-A1"][0].metadata["request"]["temperature"] == 0.2  # unknown fields land in metadata


def test_lines_without_ids_give_line_numbered_ids_and_share_the_session_of_their_opening():
    records, _, _ = parsed("openai_chat")
    booking = sorted((r for r in records if r.session_id == "openai_chat.jsonl:5"), key=lambda r: r.order_key())
    assert [r.id for r in booking] == ["openai_chat.jsonl:5#0000", "openai_chat.jsonl:5#0001",
                                       "openai_chat.jsonl:6#0002", "openai_chat.jsonl:6#0003"]


def test_openai_batch_output_is_joined_with_its_requests(tmp_path):
    records, quarantine, _ = parsed("openai_chat", LOGS / "openai_batch", requests=str(LOGS / "openai_batch_input.jsonl"))
    assert [(r.role.value, r.text) for r in records] == [("user", "Name the capital of Australia."), ("assistant", "Canberra.")]
    assert records[1].run_id == "chatcmpl-C1" and records[1].metadata["custom_id"] == "task-1"
    (failed,) = quarantine
    assert failed.reason.value == "schema_violation" and "task-2 failed" in failed.errors[0]


def test_anthropic_blocks_become_reasoning_tool_calls_and_tool_turns():
    records, _, _ = parsed("anthropic_messages")
    by_id = {r.id: r for r in records}
    called = by_id["thread-42#0002:b8e85b61"]
    assert called.text == "Let me pull the deploy logs." and called.reasoning.startswith("Exit code 137")
    assert called.tool_calls == [{"id": "toolu_01A", "type": "function",
                                  "function": {"name": "get_deploy_logs", "arguments": {"deploy_id": "d-981"}}}]
    reply = by_id["thread-42#0003:841aaeb1"]
    assert reply.role.value == "tool" and reply.tool_call_id == "toolu_01A" and "OOMKilled" in reply.text
    assert called.tokens_used == 88 and called.run_id == "msg_01"


def test_otel_spans_of_both_forms_become_turns_and_other_spans_are_counted_as_skipped():
    records, _, source = parsed("otel_genai")
    sessions = {r.session_id for r in records}
    assert sessions == {"conv-otel-1", "conv-otel-2", "0af7651916cd43dd8448eb211c80319c"}  # the trace id, no conversation id
    events = sorted((r for r in records if r.session_id.startswith("0af7")), key=lambda r: r.order_key())
    assert [(r.role.value, r.text) for r in events] == [
        ("system", "Answer arithmetic questions exactly."), ("user", "What is 17 * 23?"), ("assistant", "17 * 23 = 391.")]
    assert events[2].tokens_used == 9 and events[2].metadata["resource.service.name"] == "trip-planner"
    assert source.inputs()[0]["skipped"] == {"execute_tool": 1, "invoke_agent": 1}


def test_sharegpt_function_calls_observations_and_think_blocks():
    records, _, _ = parsed("sharegpt")
    first = sorted((r for r in records if r.session_id == "sg-001"), key=lambda r: r.order_key())
    assert [r.role.value for r in first] == ["system", "user", "assistant", "tool", "assistant"]
    assert first[2].tool_calls[0]["function"] == {"name": "get_exchange_rate", "arguments": {"base": "USD", "target": "EUR"}}
    assert "get_exchange_rate" in first[0].metadata["tools"]
    prime = [r for r in records if r.text == "No: 221 = 13 × 17."]
    assert len(prime) == 1 and prime[0].reasoning.startswith("221 = 13 × 17")


def test_langsmith_feedback_gives_reward_and_label_and_chain_runs_are_skipped():
    records, _, source = parsed("langsmith", reward_key="correctness", label_key="thumbs")
    answers = {r.run_id: r for r in records if r.role.value == "assistant" and r.group_id}
    assert (answers["run-llm-2"].reward, answers["run-llm-2"].label.value) == (1.0, "chosen")
    assert (answers["run-llm-3"].reward, answers["run-llm-3"].label.value) == (0.4, "rejected")
    assert answers["run-llm-2"].metadata["tags"] == ["support-bot", "prod"]
    assert source.inputs()[0]["skipped"] == {"chain": 1, "tool": 1}


def test_langfuse_scores_give_the_reward_and_the_best_alternative_is_trained(tmp_path):
    records, _, _ = parsed("langfuse")
    assert {r.run_id: r.reward for r in records if r.reward is not None} == {"obs-1": 0.9, "obs-4": 0.3}
    sft, quarantine, _ = export(tmp_path, "langfuse")
    (line,) = [line for line in sft if line["provenance"]["session_id"] == "sess-lf-1"]
    assert line["messages"][2]["content"].startswith("Hi Sam, a quick reminder")
    assert {row["record_id"] for row in quarantine if row["reason"] == "not_selected"} == {"sess-lf-1#0002:f4ecece6"}


def _as_parquet(document: Path, out: Path, key: str) -> Path:
    """A bulk export as the platforms write it: one row per item, nested columns as JSON text."""
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    items = json.loads(document.read_text())[key]
    columns = sorted({k for item in items for k in item})
    rows = [{k: (json.dumps(item[k]) if isinstance(item.get(k), (dict, list)) else item.get(k)) for k in columns} for item in items]
    table = pa.Table.from_pylist([{k: (None if v is None else str(v)) for k, v in row.items()} for row in rows])
    parquet.write_table(table, out)
    return out


@pytest.mark.parametrize(("kind", "key"), [("langsmith", "runs"), ("langfuse", "data")])
def test_parquet_bulk_exports_give_the_same_records_as_the_api_listing(tmp_path, kind, key):
    listing, _, _ = parsed(kind)
    exported, _, _ = parsed(kind, _as_parquet(LOGS / FORMATS[kind][0], tmp_path / f"{kind}.parquet", key))
    shape = lambda r: (r.id, r.role, r.text, r.tool_calls, r.tool_call_id, r.reasoning)  # noqa: E731
    # The deliberately bad item (input 42) becomes valid text once every column is text: leave it out.
    exported = [r for r in exported if r.run_id != "obs-bad" and not r.text == "42"]
    assert [shape(r) for r in exported] == [shape(r) for r in listing]


def test_source_fields_apply_to_every_record_a_line_yields(tmp_path):
    records, _, _ = parsed("openai_chat")
    cls = SOURCES.get("openai_chat")
    mapped = list(cls(cls.Params(kind="openai_chat", path=str(LOGS / "openai_chat.jsonl"),
                                 fields={"tenant": "metadata.request.model"})).read())
    tenants = {r.id: r.tenant for r in mapped if not isinstance(r, QuarantineRow)}
    assert tenants["conv-paris#0002:bc03a1f4"] == "gpt-4o" and tenants["openai_chat.jsonl:6#0003"] == "gpt-4o-mini"
    assert len(tenants) == len(records)


def _compressed_copy(kind: str, root: Path, compression: str) -> Path:
    fixture = LOGS / FORMATS[kind][0]
    data = fixture.read_bytes()
    if compression == "gzip":
        target, packed = root / (fixture.name + ".gz"), gzip.compress(data, mtime=0)
    else:
        target, packed = root / (fixture.name + ".zst"), zstandard.ZstdCompressor().compress(data)
    root.mkdir(parents=True, exist_ok=True)
    target.write_bytes(packed)
    return root  # a directory holding only the compressed file


@pytest.mark.parametrize("kind", FORMATS)
def test_gzip_and_zstd_copies_give_byte_identical_datasets(tmp_path, kind):
    plain = tmp_path / "plain"
    shutil.copy(LOGS / FORMATS[kind][0], (plain.mkdir() or plain) / FORMATS[kind][0])
    outputs = {}
    for name, path in (("plain", plain), *((c, _compressed_copy(kind, tmp_path / c, c)) for c in ("gzip", "zstd"))):
        _, quarantine, _ = export(tmp_path / name, kind, path)
        outputs[name] = ((tmp_path / name / "out" / "sft.jsonl").read_bytes(), quarantine)
    for name in ("gzip", "zstd"):
        assert outputs[name][0] == outputs["plain"][0]
        assert _without_paths(outputs[name][1]) == _without_paths(outputs["plain"][1])


def _without_paths(rows):
    """Quarantine rows without origin.path (also the origin inside a quarantined record): where the file was."""
    def strip(origin):
        return {k: v for k, v in origin.items() if k != "path"}

    return [
        {**row, "origin": strip(row["origin"]),
         "record": {**row["record"], "origin": strip(row["record"]["origin"])}
         if isinstance(row["record"], dict) and "origin" in row["record"] else row["record"]}
        for row in rows
    ]


# A compact chat template that reads messages the way the Qwen3 template does: `reasoning_content` in <think>,
# `tool_calls[].function.{name, arguments}` (arguments as an object) in <tool_call>, tool messages in
# <tool_response>.
CHAT_TEMPLATE = (
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{%- if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}</tool_call>{% endfor %}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>{{ m.content }}</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}"
)


@pytest.mark.parametrize("kind", FORMATS)
def test_each_sft_export_loads_with_datasets_and_renders_its_tool_calls_through_trl(tmp_path, kind):
    from task_fixtures import load_with_datasets

    trl_data = pytest.importorskip("trl.data_utils")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    export(tmp_path, kind, None, "task.include_reasoning=true")
    rows = load_with_datasets(tmp_path / "out" / "sft.jsonl", tmp_path / "cache")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")), unk_token="[UNK]")
    tokenizer.chat_template = CHAT_TEMPLATE
    calls = 0
    for row in rows:
        assert trl_data.is_conversational(row)
        text = trl_data.apply_chat_template({"messages": row["messages"]}, tokenizer)["text"]
        for message in row["messages"]:
            for call in message.get("tool_calls") or []:
                calls += 1
                assert f'"name": "{call["function"]["name"]}"' in text
                assert json.dumps({k: v for k, v in call["function"]["arguments"].items() if v is not None}) in text
            if message["role"] == "tool":
                assert f"<tool_response>{message['content']}</tool_response>" in text
    assert calls >= 1
    assert "<think>" in "".join(trl_data.apply_chat_template({"messages": r["messages"]}, tokenizer)["text"] for r in rows)


@pytest.mark.parametrize("task", ["preference", "rollout"])
def test_preference_and_rollout_lines_carry_tool_call_ids_and_reasoning_only_when_asked(tmp_path, task):
    texts = {}
    for name, extra in (("plain", []), ("reasoned", ["task.include_reasoning=true"])):
        out = tmp_path / name
        result = run_pipeline(out, ["source=langfuse", f"source.path={LOGS / FORMATS['langfuse'][0]}", "split=none",
                                    f"task={task}", *extra])
        assert result.manifest["stages"][-1]["dropped"] == {}  # nothing refused by the line schema at write time
        texts[name] = (out / f"{task}.jsonl").read_text()
    assert '"tool_call_id":"call_L1"' in texts["plain"].replace(" ", "")
    assert "reasoning_content" not in texts["plain"]
    if task == "rollout":  # every candidate is a response, the one with reasoning too
        assert "reasoning_content" in texts["reasoned"]


@pytest.mark.parametrize("kind", ["openai_chat", "langsmith"])
def test_a_directory_of_logs_maps_one_file_per_shard_on_worker_processes(tmp_path, kind):
    fixture = LOGS / FORMATS[kind][0]
    logs = tmp_path / "logs"
    for name in ("a", "b"):  # the same log twice: the second file's turns are the first one's ids again
        (logs / name).mkdir(parents=True)
        shutil.copy(fixture, logs / name / fixture.name)
    (logs / "b" / fixture.name).rename(logs / "b" / (fixture.name + ".gz"))
    (logs / "b" / (fixture.name + ".gz")).write_bytes(gzip.compress(fixture.read_bytes(), mtime=0))
    outputs = {}
    for workers in (1, 2):
        _, quarantine, result = export(tmp_path / str(workers), kind, logs, f"executor.workers={workers}")
        counts = result.manifest["counts"]
        assert counts["input_lines"] == 2 * FORMATS[kind][2]
        assert counts["input_rows"] == counts["exported_records"] + counts["quarantined_rows"]
        outputs[workers] = ((tmp_path / str(workers) / "out" / "sft.jsonl").read_bytes(), quarantine)
    assert outputs[1] == outputs[2]
    assert "duplicate" in {row["reason"] for row in outputs[2][1]}  # a named conversation's turns, read again


def test_a_jsonl_line_holding_a_listing_page_gives_its_items(tmp_path):
    page = json.loads((LOGS / FORMATS["langfuse"][0]).read_text())
    path = tmp_path / "pages.jsonl"
    path.write_text(json.dumps(page) + "\n")
    from_listing, _, _ = parsed("langfuse")
    from_page, rejected, _ = parsed("langfuse", path)
    assert len(from_page) == len(from_listing) and len(rejected) == 1  # the bad observation takes its line along


def test_a_bad_span_is_quarantined_alone_and_the_other_spans_of_its_line_are_read(tmp_path):
    lines = (LOGS / "otel_genai.jsonl").read_text().splitlines()
    batch = json.loads(lines[0])
    spans = batch["resourceSpans"][0]["scopeSpans"][0]["spans"]
    broken = json.loads(json.dumps(spans[1]))
    for attribute in broken["attributes"]:
        if attribute["key"] == "gen_ai.input.messages":
            attribute["value"]["stringValue"] = "[{\"role\": \"narrator\", \"parts\": []}]"
    spans.insert(2, broken)
    path = tmp_path / "otel.jsonl"
    path.write_text(json.dumps(batch) + "\n")
    records, (rejected,), _ = parsed("otel_genai", path)
    assert len(records) == 3 and rejected.record_id == "otel.jsonl:1@2" and "narrator" in rejected.errors[0]



def test_a_call_with_a_turn_nested_too_deep_to_hash_is_quarantined_whole(tmp_path):
    arguments = json.dumps({"a": json.loads("[" * 300 + "]" * 300)})  # JSON text orjson reads but cannot write
    answer = {"role": "assistant", "content": None,
              "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]}
    call = {"conversation_id": "deep", "request": {"messages": [{"role": "user", "content": "hi"}]},
            "response": {"id": "r1", "created": 1767261600, "choices": [{"message": answer}]}}
    plain = {"request": {"messages": [{"role": "user", "content": "hi"}]}, "response": {
        "id": "r2", "created": 1767261600, "choices": [{"message": {"role": "assistant", "content": "hello"}}]}}
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(call) + "\n" + json.dumps(plain) + "\n")
    lines, quarantine, result = export(tmp_path, "openai_chat", path)
    (row,) = [row for row in quarantine if row["origin"]["line"] == 1]
    assert row["reason"] == "schema_violation" and "cannot be hashed" in row["errors"][0]
    counts = result.manifest["counts"]
    assert lines and counts["input_rows"] == counts["exported_records"] + len(quarantine)


def test_a_call_logged_at_the_last_representable_time_gives_its_turns_that_time(tmp_path):
    call = {"conversation_id": "late", "created_at": "9999-12-31T23:59:59.999999Z",
            "request": {"messages": [{"role": "user", "content": "hi"}]},
            "response": {"id": "m1", "content": [{"type": "text", "text": "hello"}]}}
    path = tmp_path / "late.jsonl"
    path.write_text(json.dumps(call) + "\n")
    records, rejected, _ = parsed("anthropic_messages", path)
    assert not rejected
    assert [r.role.value for r in sorted(records, key=lambda r: r.order_key())] == ["user", "assistant"]
    assert {r.created_at.isoformat() for r in records} == {"9999-12-31T23:59:59.999999+00:00"}


def test_a_line_holding_a_value_nested_deeper_than_python_recurses_is_quarantined_alone(tmp_path):
    deep = "[" * 990 + "]" * 990  # orjson reads 1,024 levels; str() and repr() recurse past Python's limit
    turns = json.dumps([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}])
    lines = [
        f'{{"id": {deep}, "conversations": {turns}}}',  # the conversation id, made text as the call is merged
        f'{{"id": "bad-speaker", "conversations": [{{"from": {deep}, "value": "hi"}}]}}',  # named in the error
        f'{{"id": "ok", "conversations": {turns}}}',
    ]
    path = tmp_path / "deep.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    records, rejected, _ = parsed("sharegpt", path)
    assert {r.session_id for r in records} == {"ok"}
    assert [(row.origin.line, row.reason.value) for row in rejected] == [
        (1, "schema_violation"), (2, "schema_violation"),
    ]


@pytest.mark.parametrize("kind", FORMATS)
def test_every_produced_record_fits_the_input_record_schema(kind):
    from distill.validation import load_schema

    validator = __import__("jsonschema").Draft202012Validator(load_schema("input_record"))
    records, _, _ = parsed(kind)
    for record in records:
        row = record.to_json()
        row.pop("origin", None)
        validator.validate(row)
    assert any(r.reasoning for r in records)
    assert any(r.tool_call_id for r in records) or kind == "sharegpt"  # ShareGPT pairs calls and replies in order

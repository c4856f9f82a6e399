"""LangSmith run exports: `llm` runs from the runs API listing (JSON) or a bulk export (Parquet or JSONL)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import orjson

from distill.record import Role
from distill.sources.base import SOURCES
from distill.sources.chatlog import ChatLogParams, ChatLogSource
from distill.sources.messages import (
    Call,
    FormatError,
    Rejected,
    Skipped,
    Turn,
    leftovers,
    per_item,
    require_dict,
    text_of,
    tool_call,
)
from distill.sources.openai_chat import CONVERSATION_KEYS, openai_turn

# LangChain message types -> roles.
LANGCHAIN_TYPES = {
    "human": Role.user.value, "HumanMessage": Role.user.value,
    "ai": Role.assistant.value, "AIMessage": Role.assistant.value, "AIMessageChunk": Role.assistant.value,
    "system": Role.system.value, "SystemMessage": Role.system.value,
    "tool": Role.tool.value, "ToolMessage": Role.tool.value,
    "function": Role.tool.value, "FunctionMessage": Role.tool.value,
}
_LANGCHAIN_KEYS = ("content", "type", "tool_calls", "tool_call_id", "name", "additional_kwargs", "id")


def json_column(value: Any) -> Any:
    """Bulk exports keep nested columns as JSON text: decode them; other values as they are."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def chat_turn(message: Any, where: str) -> Turn:
    """A message in any of the shapes tracing SDKs record: LangChain's serialized form (`{lc, type: constructor,
    id: [..., "AIMessage"], kwargs}`), its dict form (`{type: ai, data}` or `{type: ai, content}`) or OpenAI's
    (`{role, content}`)."""
    message = require_dict(message, where)
    if message.get("lc") is not None and isinstance(message.get("kwargs"), dict):
        kind = (message.get("id") or [None])[-1]
        return _langchain_turn(kind, message["kwargs"], where)
    if "role" not in message and message.get("type") in LANGCHAIN_TYPES:
        data = message["data"] if isinstance(message.get("data"), dict) else message
        return _langchain_turn(message["type"], data, where)
    return openai_turn(message, where)


def _langchain_turn(kind: Any, data: dict[str, Any], where: str) -> Turn:
    role = LANGCHAIN_TYPES.get(kind)
    if role is None:
        raise FormatError(f"{where}: unknown LangChain message type {kind!r}")
    extra = data.get("additional_kwargs") if isinstance(data.get("additional_kwargs"), dict) else {}
    calls = [tool_call(c.get("id"), c.get("name"), c.get("args")) for c in data.get("tool_calls") or [] if isinstance(c, dict)]
    if not calls and extra.get("tool_calls"):
        calls = openai_turn({"role": "assistant", "tool_calls": extra["tool_calls"]}, where).tool_calls or []
    content = data.get("content")
    reasoning = extra.get("reasoning_content")
    if isinstance(content, list):  # content blocks (Anthropic through LangChain): thinking apart
        thoughts = [b.get("thinking") for b in content if isinstance(b, dict) and b.get("type") == "thinking"]
        if thoughts and reasoning is None:
            reasoning = "\n".join(t for t in thoughts if t)
        content = [b for b in content if not (isinstance(b, dict) and b.get("type") in ("thinking", "tool_use"))]
    metadata = leftovers(data, _LANGCHAIN_KEYS)
    rest = {k: v for k, v in extra.items() if k not in ("tool_calls", "reasoning_content")}
    if rest:
        metadata["additional_kwargs"] = rest
    return Turn(
        role=role,
        text=text_of(content),
        tool_calls=calls or None,
        tool_call_id=data.get("tool_call_id"),
        name=data.get("name") if role == Role.tool.value else None,
        reasoning=reasoning if isinstance(reasoning, str) else None,
        metadata=metadata,
    )


def feedback_fields(scores: dict[str, float], reward_key: str | None, label_key: str | None) -> dict[str, Any]:
    """reward from the `reward_key` score (or the only score there is), label from the `label_key` score
    (>= 0.5: chosen, else rejected)."""
    fields: dict[str, Any] = {}
    reward_from = reward_key if reward_key is not None else (next(iter(scores)) if len(scores) == 1 else None)
    if reward_from is not None and isinstance(scores.get(reward_from), (int, float)):
        fields["reward"] = float(scores[reward_from])
    if label_key is not None and isinstance(scores.get(label_key), (int, float)):
        fields["label"] = "chosen" if scores[label_key] >= 0.5 else "rejected"
    return fields


class FeedbackParams(ChatLogParams):
    reward_key: str | None = None
    """The feedback key (LangSmith) or score name (Langfuse) whose value is the reward; null: the only one."""
    label_key: str | None = None
    """The feedback key or score name whose value (1 / 0, thumbs up / down) is the label; null: none."""


def input_turns(inputs: Any, where: str) -> list[Turn]:
    inputs = json_column(inputs)
    messages = inputs.get("messages") if isinstance(inputs, dict) else inputs
    if isinstance(messages, list) and messages and isinstance(messages[0], list):
        messages = messages[0]  # LangChain chat models log a batch of prompts: one per call here
    if isinstance(messages, str):
        return [Turn(role=Role.user.value, text=messages)]
    if not isinstance(messages, list):
        if isinstance(inputs, dict) and isinstance(inputs.get("prompt"), str):
            return [Turn(role=Role.user.value, text=inputs["prompt"])]
        raise FormatError(f"{where}: no messages")
    return [chat_turn(m, f"{where}[{i}]") for i, m in enumerate(messages)]


def generation_turns(outputs: Any) -> list[Turn]:
    outputs = json_column(outputs)
    if not isinstance(outputs, dict):
        raise FormatError("outputs: no generations")
    if isinstance(outputs.get("generations"), list):
        generations = outputs["generations"]
        if generations and isinstance(generations[0], list):
            generations = generations[0]
        turns = []
        for i, generation in enumerate(generations):
            generation = require_dict(generation, f"outputs.generations[{i}]")
            if isinstance(generation.get("message"), dict):
                turn = chat_turn(generation["message"], f"outputs.generations[{i}].message")
            else:
                turn = Turn(role=Role.assistant.value, text=text_of(generation.get("text")))
            info = generation.get("generation_info")
            if isinstance(info, dict) and info:
                turn.metadata["generation_info"] = info
            turns.append(turn)
        return turns
    if isinstance(outputs.get("choices"), list):  # the OpenAI client wrapper logs the response itself
        return [openai_turn(c.get("message"), f"outputs.choices[{i}].message") for i, c in enumerate(outputs["choices"])]
    if isinstance(outputs.get("output"), (dict, str)):
        output = outputs["output"]
        return [chat_turn(output, "outputs.output") if isinstance(output, dict) else Turn(role=Role.assistant.value, text=output)]
    raise FormatError("outputs: no generations")


class TraceExportSource(ChatLogSource):
    """What tracing-platform exports share: items of one type are model calls, the others are skipped; the API
    listing (JSON), JSONL or Parquet; feedback or scores as reward and label."""

    Params = FeedbackParams
    params: FeedbackParams
    suffixes = (".jsonl", ".json", ".ndjson", ".parquet")
    type_key: ClassVar[str]
    call_type: ClassVar[str]

    def calls(self, item: Any) -> Iterable[Call | Skipped | Rejected]:
        row = require_dict(item, "the item")
        for key in self.listing_keys:  # a JSONL line holding a whole listing page
            if isinstance(row.get(key), list) and self.type_key not in row:
                return per_item(row[key], self.calls)
        if row.get(self.type_key) != self.call_type:
            return [Skipped(str(row.get(self.type_key) or "unknown"))]
        return [self.call(row)]

    @abstractmethod
    def call(self, row: dict[str, Any]) -> Call:
        """The model call one item of the call type logs."""


_RUN_KEYS = (
    "id", "run_type", "inputs", "outputs", "start_time", "feedback_stats", "trace_id", "completion_tokens", "extra",
)


@SOURCES.register("langsmith")
class LangSmithSource(TraceExportSource):
    """LangSmith runs: the runs API listing (`{"runs": [...]}` or a list, as JSON), one run per JSONL line, or a
    bulk export (Parquet, nested columns as JSON text). Runs of type `llm` are calls; other runs (chains, tools,
    retrievers) are skipped and counted in the manifest input's `skipped`.

    `inputs.messages` (LangChain or OpenAI messages) is the history, `outputs.generations` (or `outputs.choices`)
    the answers; `id` is the answer's `run_id`, `start_time` its time, `completion_tokens` its `tokens_used`.
    `feedback_stats` give the reward (`source.reward_key`, or the only key) and the label (`source.label_key`);
    the session is `extra.metadata` `thread_id` / `session_id` / `conversation_id`, else the trace id. Tags,
    the run name, invocation params and the other keys land in metadata.
    """

    kind = "langsmith"
    listing_keys = ("runs",)
    type_key = "run_type"
    call_type = "llm"

    def call(self, run: dict[str, Any]) -> Call:
        outputs = generation_turns(run.get("outputs"))
        extra = json_column(run.get("extra"))
        extra = extra if isinstance(extra, dict) else {}
        run_metadata = extra.get("metadata") if isinstance(extra.get("metadata"), dict) else {}
        conversation = next((run_metadata[k] for k in CONVERSATION_KEYS if run_metadata.get(k)), None)
        feedback = json_column(run.get("feedback_stats"))
        scores = {
            key: stats.get("avg") for key, stats in (feedback or {}).items() if isinstance(stats, dict)
        } if isinstance(feedback, dict) else {}
        fields = {"run_id": str(run["id"]) if run.get("id") is not None else None}
        if len(outputs) == 1 and isinstance(run.get("completion_tokens"), int):
            fields["tokens_used"] = run["completion_tokens"]
        fields.update(feedback_fields(scores, self.params.reward_key, self.params.label_key))
        metadata = {key: json_column(value) for key, value in leftovers(run, _RUN_KEYS).items()}
        if extra:
            metadata["extra"] = extra
        if feedback:
            metadata["feedback_stats"] = feedback
        return Call(
            messages=input_turns(run.get("inputs"), "inputs.messages"),
            outputs=outputs,
            conversation=str(conversation or run.get("trace_id") or "") or None,
            created_at=run.get("start_time"),
            fields={k: v for k, v in fields.items() if v is not None},
            metadata=metadata,
        )

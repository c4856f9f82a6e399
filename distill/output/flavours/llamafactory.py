"""`output.flavor=llamafactory`: LLaMA-Factory's sharegpt rows (alpaca for instruction SFT), and the
`dataset_info.json` entry naming each file and its columns.

The shape follows LLaMA-Factory's own reader, `SharegptDatasetConverter` in src/llamafactory/data/converter.py and
data/README.md: `conversations` of {from, value} with tags human / gpt / observation / function_call, human or
observation at odd positions and gpt or function_call at even ones, an even count for SFT and an odd one (ending
on a human turn) for a preference prompt; a leading system turn goes to the `system` column; a function_call
value is the JSON list of {name, arguments} its FunctionFormatter parses (formatter.py). LLaMA-Factory skips a row
that breaks these rules with only a log warning, so distill refuses the line instead (`schema_violation`, with
why), before it is written. As in LLaMA-Factory's own OpenAI converter, an assistant turn that calls tools becomes
one function_call turn (its text, if any, is not kept) and consecutive tool results one observation turn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from distill.output.flavours.base import (
    CATEGORY_PAIRED,
    PAIRED,
    SFT_CHAT,
    SFT_INSTRUCTION,
    UNPAIRED,
    Flavour,
    FLAVOURS,
    Refused,
    RenderContext,
)
from distill.output.flavours.toolcalls import function_of
from distill.reasons import Reason
from distill.tasks.base import Example

HUMAN, GPT, OBSERVATION, FUNCTION, SYSTEM = "human", "gpt", "observation", "function_call", "system"
TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": HUMAN,
    "assistant_tag": GPT,
    "observation_tag": OBSERVATION,
    "function_tag": FUNCTION,
    "system_tag": SYSTEM,
}
# Tool results joined the way LLaMA-Factory's OpenAI converter joins consecutive tool turns.
TOOL_RESULTS_JOIN = "\n</tool_response>\n<tool_response>\n"
DATASET_INFO = "dataset_info.json"


@FLAVOURS.register("llamafactory")
class LlamaFactoryFlavour(Flavour):
    name = "llamafactory"
    shapes = frozenset({SFT_CHAT, SFT_INSTRUCTION, PAIRED, CATEGORY_PAIRED, UNPAIRED})

    def schema(self, shape: str) -> str | None:
        return "llamafactory_alpaca_line" if shape == SFT_INSTRUCTION else "llamafactory_sharegpt_line"

    def render(self, example: Example, context: RenderContext) -> dict[str, Any]:
        line = example.line
        if context.shape == SFT_INSTRUCTION:
            return {"instruction": line["instruction"], "input": line["context"], "output": line["response"]}
        if context.shape == SFT_CHAT:
            system, turns = conversation(line["messages"])
            _check_alternation(turns, ranking=False)
            row: dict[str, Any] = {"conversations": turns}
        else:
            system, turns = conversation(line["prompt"])
            if context.shape == UNPAIRED:
                answer = conversation(line["completion"])[1]
                turns = turns + answer
                _check_alternation(turns, ranking=False)
                row = {"conversations": turns, "kto_tag": line["label"]}
            else:
                _check_alternation(turns, ranking=True)
                chosen, rejected = conversation(line["chosen"])[1], conversation(line["rejected"])[1]
                if len(chosen) != 1 or len(rejected) != 1:
                    raise Refused(Reason.schema_violation, "llamafactory: chosen and rejected must be one turn each")
                row = {"conversations": turns, "chosen": chosen[0], "rejected": rejected[0]}
        # Always present: LLaMA-Factory reads example["system"] for every row once the column is named.
        row["system"] = system or ""
        return row

    def side_files(self, files: Sequence[tuple[str, str]], context: RenderContext) -> dict[str, Any]:
        return {DATASET_INFO: {_dataset_name(name): dataset_entry(name, context.shape) for _, name in files}}


def conversation(messages: Sequence[dict[str, Any]]) -> tuple[str | None, list[dict[str, str]]]:
    """(system prompt or None, sharegpt turns) for TRL messages."""
    system = None
    turns: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            if index != 0:
                raise Refused(Reason.schema_violation, f"llamafactory: system message at position {index}; only a leading one has a place")
            system = message["content"]
        elif role == "tool":
            if turns and turns[-1]["from"] == OBSERVATION:
                turns[-1]["value"] += TOOL_RESULTS_JOIN + message["content"]
            else:
                turns.append({"from": OBSERVATION, "value": message["content"]})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [_call(call) for call in message["tool_calls"]]
            turns.append({"from": FUNCTION, "value": json.dumps(calls, ensure_ascii=False, sort_keys=True)})
        else:
            turns.append({"from": HUMAN if role == "user" else GPT, "value": message["content"]})
    return system, turns


def _call(call: dict[str, Any]) -> dict[str, Any]:
    function = function_of(call)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise Refused(Reason.schema_violation, "llamafactory: tool call arguments are not JSON") from None
    return {"name": function.get("name"), "arguments": arguments if arguments is not None else {}}


def _check_alternation(turns: Sequence[dict[str, str]], *, ranking: bool) -> None:
    """LLaMA-Factory's rule: human/observation at odd positions, gpt/function_call at even ones; an SFT or KTO
    conversation ends on an answer (even count), a preference prompt on a question (odd count)."""
    for position, turn in enumerate(turns):
        expected = (HUMAN, OBSERVATION) if position % 2 == 0 else (GPT, FUNCTION)
        if turn["from"] not in expected:
            raise Refused(
                Reason.schema_violation,
                f"llamafactory: turn {position + 1} is {turn['from']}, expected {' or '.join(expected)} "
                "(turns must alternate question / answer)",
            )
    if (len(turns) % 2 == 0) == ranking or not turns:
        end = "a question (human/observation)" if ranking else "an answer (gpt/function_call)"
        raise Refused(Reason.schema_violation, f"llamafactory: the conversation must end on {end}")


def _dataset_name(file_name: str) -> str:
    """`sft.train.jsonl` -> `distill_sft_train`: the name to put in a LLaMA-Factory config's `dataset:`."""
    return "distill_" + file_name.rsplit(".", 1)[0].replace(".", "_")


def dataset_entry(file_name: str, shape: str) -> dict[str, Any]:
    """The dataset_info.json entry for one file (data/README.md: file_name, formatting, ranking, columns, tags)."""
    if shape == SFT_INSTRUCTION:
        return {"file_name": file_name, "formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    columns = {"messages": "conversations", "system": "system"}
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt"}
    if shape in (PAIRED, CATEGORY_PAIRED):
        entry["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    elif shape == UNPAIRED:
        columns["kto_tag"] = "kto_tag"
    entry["columns"] = columns
    entry["tags"] = dict(TAGS)
    return entry

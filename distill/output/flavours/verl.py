"""`output.flavor=verl`: Parquet prompts for verl's PPO/GRPO trainers, one row per rollout line.

Columns as verl's `RLHFDataset` (verl/utils/dataset/rl_dataset.py) and its reward managers read them: `prompt`
(chat messages, the `data.prompt_key` default, passed to the tokenizer's chat template), `data_source` (picks the
reward function), `ability`, `reward_model` {style, ground_truth} (`ground_truth` is what the reward function
scores against) and `extra_info` {index, split, ...} (`index` is read for each row). The responses of the
canonical line are not written: verl samples its own. A prompt without a `ground_truth` (the record field, on
the prompt's records) is refused as `missing_ground_truth`: verl would fail on it in the middle of training.

Provenance always goes to the sidecar; `extra_info` keeps the line's `id` and `record_ids` for the join.
"""

from __future__ import annotations

from typing import Any

from distill.output.flavours.base import ROLLOUT, Flavour, FLAVOURS, Refused, RenderContext
from distill.output.flavours.toolcalls import arguments_text, function_of
from distill.reasons import Reason
from distill.tasks.base import Example

DEFAULT_DATA_SOURCE = "distill"


@FLAVOURS.register("verl")
class VerlFlavour(Flavour):
    name = "verl"
    shapes = frozenset({ROLLOUT})
    inline_provenance = False
    file_format = "parquet"

    def schema(self, shape: str) -> str | None:
        return "verl_rollout_line"

    def render(self, example: Example, context: RenderContext) -> dict[str, Any]:
        line = example.line
        prompt_records = example.records[: len(line["prompt"])]
        truths = [r.ground_truth for r in prompt_records if r.ground_truth is not None]
        if not truths:
            raise Refused(Reason.missing_ground_truth, "verl: no ground_truth on the prompt's records (map one with +source.fields.ground_truth=FIELD)")
        source = context.data_source or next((r.source for r in prompt_records if r.source), None) or DEFAULT_DATA_SOURCE
        return {
            "data_source": source,
            "prompt": [_message(m) for m in line["prompt"]],
            "ability": context.ability,
            "reward_model": {"style": "rule", "ground_truth": truths[-1]},
            "extra_info": {"index": None, "split": None, "id": line["id"], "record_ids": list(line["provenance"]["record_ids"])},
        }

    def place(self, line: dict[str, Any], index: int, side: str) -> dict[str, Any]:
        return {**line, "extra_info": {**line["extra_info"], "index": index, "split": side}}


def _message(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {"type": "function", "function": {"name": function_of(c).get("name"), "arguments": arguments_text(function_of(c).get("arguments"))}}
            for c in message["tool_calls"]
        ]
    for key in ("tool_call_id", "name"):
        if message.get(key) is not None:
            out[key] = message[key]
    return out

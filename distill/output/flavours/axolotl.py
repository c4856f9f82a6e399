"""`output.flavor=axolotl`: rows for axolotl's `type: chat_template` with a training flag on every message, and
the `datasets:` block to paste into an axolotl config, written beside the data as `axolotl_datasets.yaml`.

Keys as axolotl documents them (docs/dataset-formats/conversation.qmd, "fine-grained control over tokens and
turns"): `field_messages`, `message_property_mappings`, `message_field_training` (a per-message boolean that
decides whether the turn is trained), with `roles_to_train: []` so that only those flags decide, and
`train_on_eos: turn`. A partially_accepted turn under `task.partial_turns=context` is written with `train: false`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from distill.output.flavours.base import SFT_CHAT, Flavour, FLAVOURS, RenderContext, trained_flags
from distill.split import EVAL
from distill.tasks.base import Example

DATASETS_FILE = "axolotl_datasets.yaml"
TRAIN_FLAG = "train"


@FLAVOURS.register("axolotl")
class AxolotlFlavour(Flavour):
    name = "axolotl"
    shapes = frozenset({SFT_CHAT})
    masks_turns = True

    def schema(self, shape: str) -> str | None:
        return "axolotl_chat_line"

    def render(self, example: Example, context: RenderContext) -> dict[str, Any]:
        line = example.line
        flags = trained_flags(line, context)
        return {"messages": [{**message, TRAIN_FLAG: flag} for message, flag in zip(line["messages"], flags)]}

    def side_files(self, files: Sequence[tuple[str, str]], context: RenderContext) -> dict[str, Any]:
        blocks: dict[str, list[dict[str, Any]]] = {}
        for side, name in files:
            key = "test_datasets" if side == EVAL else "datasets"
            blocks.setdefault(key, []).append(dataset_block(name))
        header = (
            "# axolotl `datasets:` for the files beside this one (written by distill, output.flavor=axolotl).\n"
            "# Paths are relative to this directory: make them absolute, or run axolotl from here.\n"
        )
        return {DATASETS_FILE: header + yaml.safe_dump(blocks, sort_keys=True, default_flow_style=False)}


def dataset_block(file_name: str) -> dict[str, Any]:
    return {
        "path": file_name,
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
        "message_property_mappings": {"role": "role", "content": "content"},
        "message_field_training": TRAIN_FLAG,
        "roles_to_train": [],
        "train_on_eos": "turn",
    }

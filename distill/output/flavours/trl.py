"""`output.flavor=trl` (the default): the canonical lines as the tasks build them, which TRL's trainers load as
they are (conversational `messages`; `prompt`/`chosen`/`rejected`; `prompt`/`completion`/`label`; rollout
prompts for GRPO)."""

from __future__ import annotations

from typing import Any

from distill.output.flavours.base import SHAPE_NAMES, Flavour, FLAVOURS, RenderContext
from distill.tasks.base import Example


@FLAVOURS.register("trl")
class TrlFlavour(Flavour):
    name = "trl"
    shapes = frozenset(SHAPE_NAMES)
    writes_canonical_lines = True

    def supports(self, shape: str) -> bool:
        return True  # every task's own line is the trl line

    def render(self, example: Example, context: RenderContext) -> dict[str, Any]:
        return {key: value for key, value in example.line.items() if key not in ("id", "provenance")}

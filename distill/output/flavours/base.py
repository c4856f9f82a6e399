"""What every output flavour is: a pure re-rendering of a valid canonical (TRL) line for one trainer.

The task builds the canonical line, the firewall and the task's line schema check it; only then does a flavour
render it. A flavour never decides what is kept: it renders, or it refuses the one line with a reason (the trainer
would reject or silently skip it). The example `id` and its provenance come from the canonical line, so they are
the same in every flavour.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from distill.reasons import Reason
from distill.registry import Registry
from distill.tasks.base import Example
from distill.tokens import TokenCounter

# The output shapes, named by the canonical line's schema (one task kind per shape).
SFT_CHAT = "sft_chat_line"
SFT_INSTRUCTION = "sft_instruction_line"
PAIRED = "preference_paired_line"
CATEGORY_PAIRED = "preference_category_line"
UNPAIRED = "preference_unpaired_line"
RANKED = "preference_ranked_line"
ROLLOUT = "rollout_line"

SHAPE_NAMES = {
    SFT_CHAT: "task=sft (chat)",
    SFT_INSTRUCTION: "task=sft_instruction",
    PAIRED: "task=preference form=paired",
    CATEGORY_PAIRED: "task=preference_category",
    UNPAIRED: "task=preference form=unpaired",
    RANKED: "task=preference form=ranked",
    ROLLOUT: "task=rollout",
    "rag_line": "task=rag",
}

INLINE, SIDECAR = "inline", "sidecar"
PARTIAL = "partially_accepted"


@dataclass(frozen=True)
class RenderContext:
    """What a flavour may read besides the line: the run's choices, never the data of other lines."""

    shape: str
    partial_turns: str = "train"
    token_counter: TokenCounter | None = None
    max_example_tokens: int | None = None
    data_source: str | None = None
    ability: str = "general"


class Refused(Exception):
    """A canonical line this flavour cannot write: quarantined with `reason`, never written."""

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class Flavour(ABC):
    name: ClassVar[str]
    shapes: ClassVar[frozenset[str]]
    """The canonical line schemas this flavour can express."""
    masks_turns: ClassVar[bool] = False
    """Whether a turn can be kept as context only (task.partial_turns=context)."""
    inline_provenance: ClassVar[bool] = True
    """False where the trainer rejects unknown keys: provenance then always goes to the sidecar."""
    file_format: ClassVar[str | None] = None
    """The one file format the trainer reads ("jsonl" or "parquet"); None: output.format decides."""
    writes_canonical_lines: ClassVar[bool] = False
    """Whether a line with its provenance inline is the task's canonical line, key for key (so its bytes are the
    example's own, `Example.jsonl`)."""

    def supports(self, shape: str) -> bool:
        return shape in self.shapes

    def schema(self, shape: str) -> str | None:
        """The JSON Schema (in `schemas/`) of this flavour's lines for `shape`, checked at write time."""
        return None

    @abstractmethod
    def render(self, example: Example, context: RenderContext) -> dict[str, Any]:
        """The trainer's row for one valid canonical line, without `id` and `provenance` (added per
        output.provenance). Raises Refused when the trainer would reject or skip the row."""

    def place(self, line: dict[str, Any], index: int, side: str) -> dict[str, Any]:
        """Fills what depends on a line's place in its file (verl's `extra_info.index`), as the merge writes the
        file. The default: nothing."""
        return line

    @property
    def places_lines(self) -> bool:
        """Whether `place` fills anything: if not, a line is final where it is rendered, and a JSONL line is encoded
        there, in the partition's worker, so the merge only copies bytes."""
        return type(self).place is not Flavour.place

    def side_files(self, files: Sequence[tuple[str, str]], context: RenderContext) -> dict[str, Any]:
        """Files written beside the data, from [(side, data file name)]: {name: JSON value or text}."""
        return {}


FLAVOURS: Registry[type[Flavour]] = Registry("output flavor")


def flavours_for(shape: str) -> list[str]:
    return [name for name in FLAVOURS.kinds() if FLAVOURS.get(name)().supports(shape)]


def refusal(flavour: Flavour, shape: str, partial_turns: str, provenance: str | None, output_format: str) -> list[str]:
    """One-line config errors for a flavour that cannot write this run's lines ([] when it can)."""
    problems = []
    if provenance == SIDECAR and shape not in SHAPE_NAMES:
        problems.append("output.provenance=sidecar: this task writes its own files, with provenance in them")
    if not flavour.supports(shape):
        what = SHAPE_NAMES.get(shape, shape)
        problems.append(
            f"output.flavor: {flavour.name} cannot express {what} lines; that task writes: {', '.join(flavours_for(shape))}"
        )
        return problems
    if partial_turns == "context" and not flavour.masks_turns:
        maskers = [n for n in FLAVOURS.kinds() if FLAVOURS.get(n).masks_turns and FLAVOURS.get(n)().supports(shape)]
        problems.append(
            f"task.partial_turns=context: output.flavor={flavour.name} cannot mask a turn; "
            f"use output.flavor={' or '.join(maskers) or '(none for this task)'}"
        )
    if provenance == INLINE and not flavour.inline_provenance:
        problems.append(
            f"output.provenance=inline: {flavour.name} files take no extra keys; use output.provenance=sidecar"
        )
    if flavour.file_format is not None and output_format != flavour.file_format and output_format != "jsonl":
        problems.append(f"output.format={output_format}: {flavour.name} files are {flavour.file_format}")
    return problems


def provenance_mode(flavour: Flavour, configured: str | None) -> str:
    """output.provenance, or the flavour's own choice when unset: inline where the trainer accepts it."""
    if configured is not None:
        return configured
    return INLINE if flavour.inline_provenance else SIDECAR


def file_format(flavour: Flavour, configured: str) -> str:
    return flavour.file_format or configured


def trained_flags(line: dict[str, Any], context: RenderContext) -> list[bool]:
    """Per message of a chat line: whether it is trained on. Assistant turns are, except partially_accepted ones
    under task.partial_turns=context (their category is read from the line's provenance, aligned by record)."""
    categories = line["provenance"].get("categories") or []
    flags = []
    for position, message in enumerate(line["messages"]):
        category = categories[position] if position < len(categories) else None
        context_only = context.partial_turns == "context" and category == PARTIAL
        flags.append(message["role"] == "assistant" and not context_only)
    return flags

"""RAG export: one retrieval document per record, behind the RAG firewall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from distill.grouping import Group
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Category, Record
from distill.tasks.base import FIREWALL_STEP, TASK_STEP, TASKS, Task, TaskOutput, TaskParams, make_example
from distill.tasks.conversation import Firewall
from distill.tasks.instruction import upstream_provenance


class RagParams(TaskParams):
    include_review: bool = False
    embedding_text_max_chars: int = Field(default=2000, ge=1)
    title_max_chars: int = Field(default=120, ge=1, le=120)


def title_of(record: Record, max_chars: int) -> str:
    """The first non-empty line of the text (cut at `max_chars`), else the task id, else the record id."""
    for line in (record.text or "").splitlines():
        if line.strip():
            return line.strip()[:max_chars]
    return (record.task_id or record.id)[:max_chars]


def tags_of(record: Record) -> list[str]:
    """task:<task id before ':'>, category:, role: (model role, else record role), model:, file:, those present."""
    role = record.metadata.get("model_role") or (record.role.value if record.role else None)
    values = {
        "task": record.task_id.split(":", 1)[0] if record.task_id else None,
        "category": record.category.value if record.category else None,
        "role": role,
        "model": record.metadata.get("model_name"),
        "file": record.source_files[0] if record.source_files else None,
    }
    return [f"{name}:{value}" for name, value in values.items() if value not in (None, "")]


@TASKS.register("rag")
class RagTask(Task):
    """One `{id, title, content, tags, source_run_id, source_category, embedding_text, provenance}` row per record.

    Firewall (`unsafe_rag_category`): accepted and partially_accepted records only, needs_human_review only with
    `include_review`, rejected never. A record without text is no document (`empty_content`).
    """

    kind = "rag"
    Params = RagParams
    schema = "rag_line"
    params: RagParams

    def __init__(self, params: RagParams) -> None:
        super().__init__(params)
        allowed = {Category.accepted, Category.partially_accepted}
        if params.include_review:
            allowed.add(Category.needs_human_review)
        self.firewall = Firewall(frozenset(allowed), Reason.unsafe_rag_category, params.require_category)

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        for group in groups:
            for record in group.records:
                self._build_one(record, group.key, output)
        return output

    def _build_one(self, record: Record, group_key: str, output: TaskOutput) -> None:
        blocked = self.firewall.check(record)
        if blocked is not None:
            output.drops.append((FIREWALL_STEP, record, blocked))
            return
        if not record.text or record.text.isspace():
            output.drops.append((TASK_STEP, record, Drop(Reason.empty_content, ("no content to retrieve",))))
            return
        output.examples.append(make_example("rag", self._document(record), [record], group_key))

    def _document(self, record: Record) -> dict[str, Any]:
        text = record.text or ""
        return {
            "title": title_of(record, self.params.title_max_chars),
            "content": text,
            "tags": tags_of(record),
            "source_run_id": record.run_id or record.id,
            "source_category": record.category.value if record.category else None,
            "embedding_text": text[: self.params.embedding_text_max_chars],
            "provenance": upstream_provenance(record),
        }

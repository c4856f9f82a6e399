"""Instruction SFT (`task.format=instruction`): one {instruction, context, response} line per record.

The instruction is not in the logs: it is written from a per-source template, chosen by the stem of the file the
evidence came from (`data/_kb/<stem>.jsonl`). Templates are config (`task.templates`), so users add their own.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from distill.grouping import Group
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.tasks.base import FIREWALL_STEP, TASK_STEP, TaskOutput, make_example
from distill.tasks.conversation import Firewall

KB_PREFIX = "data/_kb/"
UNKNOWN_STEM = "unknown"
CONTEXT_SEPARATOR = " · "
# Fields every record can fill; the others ({contractor}, {model}, {role}) only when the log has them.
ALWAYS_KNOWN_FIELDS = frozenset({"file", "task_id", "phase", "permit", "stem"})
TEMPLATE_FIELDS = ALWAYS_KNOWN_FIELDS | {"contractor", "model", "role"}

Templates = Mapping[str, str | Sequence[str]]


def template_field_names(template: str) -> set[str]:
    """The `{name}` fields a template uses. Raises ValueError when it is not a valid format string."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def template_problem(template: str, known: frozenset[str]) -> str | None:
    """What is wrong with a template (bad braces, positional or unknown fields), or None."""
    try:
        names = template_field_names(template)
    except ValueError as error:
        return f"not a valid template ({error})"
    unknown = sorted(name or "{}" for name in names if name not in known)
    return f"unknown field(s) {unknown} (known: {', '.join(sorted(known))})" if unknown else None


def checked_templates(templates: Templates) -> Templates:
    """The templates, when each uses only known fields; else ValueError naming every bad one by its stem."""
    problems = []
    for stem, options in templates.items():
        for template in [options] if isinstance(options, str) else options:
            problem = template_problem(template, TEMPLATE_FIELDS)
            if problem:
                problems.append(f"{stem}: {problem}")
    if problems:
        raise ValueError("; ".join(problems))
    return templates


def checked_fallback_template(template: str) -> str:
    """The fallback must render for any record, so it may use only the always-known fields."""
    problem = template_problem(template, ALWAYS_KNOWN_FIELDS)
    if problem:
        raise ValueError(problem)
    return template


def source_stem(record: Record) -> str:
    """The evidence's source file without `data/_kb/` and `.jsonl` (the lineage file when the log has no other)."""
    source_file = record.metadata.get("evidence_source_file")
    if not isinstance(source_file, str) and record.provenance is not None:
        source_file = record.provenance.source_file
    if not isinstance(source_file, str) or not source_file:
        return UNKNOWN_STEM
    return source_file.removeprefix(KB_PREFIX).removesuffix(".jsonl")


def _text_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def template_values(record: Record) -> dict[str, str | None]:
    task_id = record.task_id or ""
    return {
        "file": record.source_files[0] if record.source_files else "<file>",
        "task_id": task_id,
        "phase": task_id.removeprefix("phase:"),
        "permit": task_id.removeprefix("permit:"),
        "stem": source_stem(record),
        "contractor": _text_or_none(record.metadata.get("contractor")),
        "model": _text_or_none(record.metadata.get("model_name")),
        "role": _text_or_none(record.metadata.get("model_role")),
    }


def render_instruction(record: Record, templates: Templates, fallback: str) -> str:
    """The first template of the record's stem whose fields are all known, else the fallback template."""
    values = template_values(record)
    options = templates.get(values["stem"], ())
    for template in [options] if isinstance(options, str) else options:
        if all(values.get(name) is not None for name in template_field_names(template)):
            return template.format(**values)
    return fallback.format(**values)


def render_context(record: Record) -> str:
    """`matrix=<corpora>` · `pathway_fingerprints=<n>` (when > 0) · `model=<name>`, those the record has."""
    retrieved = record.metadata.get("retrieved_context")
    retrieved = retrieved if isinstance(retrieved, dict) else {}
    parts = []
    corpora = retrieved.get("matrix_corpora")
    if isinstance(corpora, list) and corpora:
        parts.append("matrix=" + ",".join(str(corpus) for corpus in corpora))
    fingerprints = retrieved.get("pathway_fingerprints_seen")
    if isinstance(fingerprints, (int, float)) and not isinstance(fingerprints, bool) and fingerprints > 0:
        parts.append(f"pathway_fingerprints={fingerprints}")
    model = _text_or_none(record.metadata.get("model_name"))
    if model is not None:
        parts.append(f"model={model}")
    return CONTEXT_SEPARATOR.join(parts)


def upstream_provenance(record: Record) -> dict[str, Any]:
    """The lineage the log carries (source_file, line_offset, sig_hash), for an example's provenance."""
    if record.provenance is None:
        return {}
    lineage = record.provenance.model_dump(include={"source_file", "line_offset", "sig_hash"})
    return {key: value for key, value in lineage.items() if value is not None}


class InstructionBuilder:
    """Builds instruction lines behind the SFT firewall: one per record of a permitted category whose model role is
    instructable (`not_instructable` otherwise, e.g. extractors) and whose text is not empty (`empty_content`)."""

    def __init__(
        self,
        firewall: Firewall,
        templates: Templates,
        fallback_template: str,
        instructable_roles: Sequence[str],
        quality_scores: Mapping[str, float],
    ) -> None:
        self.firewall = firewall
        self.templates = templates
        self.fallback_template = fallback_template
        self.instructable_roles = frozenset(instructable_roles)
        self.quality_scores = quality_scores

    def build(self, groups: Sequence[Group], output: TaskOutput) -> None:
        for group in groups:
            for record in group.records:
                self._build_one(record, group.key, output)

    def _build_one(self, record: Record, group_key: str, output: TaskOutput) -> None:
        blocked = self.firewall.check(record)
        if blocked is not None:
            output.drops.append((FIREWALL_STEP, record, blocked))
            return
        role = record.metadata.get("model_role")
        if role not in self.instructable_roles:
            why = f"model_role {role!r} is not instructable (instructable: {', '.join(sorted(self.instructable_roles))})"
            output.drops.append((TASK_STEP, record, Drop(Reason.not_instructable, (why,))))
            return
        if not record.text or record.text.isspace():
            output.drops.append((TASK_STEP, record, Drop(Reason.empty_content, ("no response text",))))
            return
        body = {
            "instruction": render_instruction(record, self.templates, self.fallback_template),
            "context": render_context(record),
            "response": record.text,
            "source_run_id": record.run_id or record.id,
            "quality_score": self._quality_score(record),
            "provenance": upstream_provenance(record),
        }
        output.examples.append(make_example("sft", body, [record], group_key))

    def _quality_score(self, record: Record) -> float | None:
        """The logged reward when there is one, else the configured score of the record's category."""
        if record.reward is not None:
            return record.reward
        return self.quality_scores.get(record.category.value) if record.category else None

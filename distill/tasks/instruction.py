"""Task `sft_instruction`: one {instruction, context, response} line per record.

The instruction is not in the logs: it is written from a template chosen by the record's *stem* (the first
non-empty value of the record paths `task.stem_from`, without `task.stem_prefix` / `task.stem_suffix`), configured
in `task.templates`, so users add their own. Which record paths fill the templates (`task.template_fields`), the
context line (`task.context_fields`) and the role that makes a record instructable (`task.role_from`) are config
too: the task knows no deployment's vocabulary (the lakehouse's lives in `+experiment=lakehouse_instruction`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from distill.grouping import Group
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import RECORD_FIELDS, Record, with_embedding
from distill.tasks.base import FIREWALL_STEP, TASK_STEP, TASKS, Task, TaskOutput, TaskParams, make_example
from distill.tasks.conversation import sft_firewall

UNKNOWN_STEM = "unknown"
CONTEXT_SEPARATOR = " · "
# Fields every record can fill; the configured `template_fields` only when the record has them.
ALWAYS_KNOWN_FIELDS = frozenset({"file", "task_id", "stem"})

Templates = Mapping[str, str | Sequence[str]]


def checked_path(path: str) -> str:
    """A dotted record path must start at a record field (`metadata.x`, `provenance.source_file`, `task_id`)."""
    head = path.split(".")[0]
    if head not in RECORD_FIELDS:
        raise ValueError(f"{path!r} does not start at a record field (fields: {', '.join(RECORD_FIELDS)})")
    return path


class FieldRef(BaseModel):
    """A template field read from a record path (`metadata.contractor`), optionally without a leading text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    strip_prefix: str = ""

    _path_is_a_record_path = field_validator("path")(checked_path)


def record_value(record: Record, path: str) -> Any:
    """The value at a dotted record path (`metadata.retrieved_context.matrix_corpora`, `provenance.source_file`),
    or None when any step of it is absent."""
    head, *rest = path.split(".")
    if head == "embedding":
        record = with_embedding(record)  # a record the reduce read back keeps it packed
    value: Any = getattr(record, head, None)
    for part in rest:
        if isinstance(value, BaseModel):
            value = getattr(value, part, None)
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value.value if isinstance(value, Enum) else value


def _text_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


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


def upstream_provenance(record: Record) -> dict[str, Any]:
    """The lineage the log carries (source_file, line_offset, sig_hash), for an example's provenance."""
    if record.provenance is None:
        return {}
    lineage = record.provenance.model_dump(include={"source_file", "line_offset", "sig_hash"})
    return {key: value for key, value in lineage.items() if value is not None}


class SftInstructionParams(TaskParams):
    include_partial: bool = False
    # The stem picks the template: the first non-empty text at these record paths, prefix and suffix removed.
    stem_from: tuple[str, ...] = ("source",)
    stem_prefix: str = ""
    stem_suffix: str = ""
    # Template fields beyond the built-in {file}, {task_id}, {stem}: name -> record path (or {path, strip_prefix}).
    template_fields: dict[str, str | FieldRef] = {}
    # stem -> template (or templates, the first whose fields are all known wins); other stems use the fallback.
    templates: dict[str, str | list[str]] = {}
    fallback_template: str = "Source '{stem}' run; produce the appropriate output for this task type."
    # label -> record path; `label=value` parts joined by " · ", leaving out absent, empty and zero values.
    context_fields: dict[str, str] = {}
    role_from: str = "role"
    instructable_roles: tuple[str, ...] = ("assistant",)
    quality_scores: dict[str, float] = {}

    @field_validator("stem_from")
    @classmethod
    def _stem_paths_are_record_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(checked_path(path) for path in paths)

    @field_validator("context_fields")
    @classmethod
    def _context_paths_are_record_paths(cls, fields: dict[str, str]) -> dict[str, str]:
        return {label: checked_path(path) for label, path in fields.items()}

    _role_path_is_a_record_path = field_validator("role_from")(checked_path)

    @field_validator("template_fields")
    @classmethod
    def _built_in_fields_stay_built_in(cls, fields: dict[str, Any]) -> dict[str, Any]:
        shadowed = sorted(ALWAYS_KNOWN_FIELDS & set(fields))
        if shadowed:
            raise ValueError(f"{shadowed} are built in (file, task_id, stem)")
        return {name: checked_path(ref) if isinstance(ref, str) else ref for name, ref in fields.items()}

    @field_validator("templates")
    @classmethod
    def _templates_use_known_fields(cls, templates: Templates, info: ValidationInfo) -> Templates:
        if "template_fields" not in info.data:
            return templates  # template_fields is invalid itself: that is the one error to report
        known = ALWAYS_KNOWN_FIELDS | set(info.data["template_fields"])
        problems = []
        for stem, options in templates.items():
            for template in [options] if isinstance(options, str) else options:
                problem = template_problem(template, known)
                if problem:
                    problems.append(f"{stem}: {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return templates

    @field_validator("fallback_template")
    @classmethod
    def _fallback_always_renders(cls, template: str) -> str:
        """The fallback must render for any record, so it may use only the always-known fields."""
        problem = template_problem(template, ALWAYS_KNOWN_FIELDS)
        if problem:
            raise ValueError(problem)
        return template


@TASKS.register("sft_instruction")
class SftInstructionTask(Task):
    """Instruction SFT: one `{instruction, context, response, source_run_id, quality_score, provenance}` line per
    record, written to `sft.*` like chat SFT.

    Firewall (`unsafe_sft_category`): a rejected or needs_human_review record never reaches a line;
    partially_accepted only with `include_partial`. A record whose role (`role_from`) is not in `instructable_roles`
    is `not_instructable`; one without text `empty_content`. `quality_score` is the record's reward, else the
    configured score of its category.
    """

    kind = "sft_instruction"
    Params = SftInstructionParams
    params: SftInstructionParams
    schema = "sft_instruction_line"

    def __init__(self, params: SftInstructionParams) -> None:
        super().__init__(params)
        self.firewall = sft_firewall(params.include_partial, params.require_category)
        self.template_fields = {
            name: ref if isinstance(ref, FieldRef) else FieldRef(path=ref) for name, ref in params.template_fields.items()
        }

    @property
    def output_name(self) -> str:
        return "sft"

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        for group in groups:
            for record in group.records:
                self._build_one(record, group.key, output)
        return output

    def stem(self, record: Record) -> str:
        for path in self.params.stem_from:
            value = record_value(record, path)
            if isinstance(value, str) and value:
                return value.removeprefix(self.params.stem_prefix).removesuffix(self.params.stem_suffix)
        return UNKNOWN_STEM

    def template_values(self, record: Record) -> dict[str, str | None]:
        values: dict[str, str | None] = {
            "file": record.source_files[0] if record.source_files else "<file>",
            "task_id": record.task_id or "",
            "stem": self.stem(record),
        }
        for name, ref in self.template_fields.items():
            value = _text_or_none(record_value(record, ref.path))
            values[name] = value.removeprefix(ref.strip_prefix) if value is not None else None
        return values

    def render_instruction(self, record: Record) -> str:
        """The first template of the record's stem whose fields are all known, else the fallback template."""
        values = self.template_values(record)
        options = self.params.templates.get(values["stem"] or "", ())
        for template in [options] if isinstance(options, str) else options:
            if all(values.get(name) is not None for name in template_field_names(template)):
                return template.format(**values)
        return self.params.fallback_template.format(**values)

    def render_context(self, record: Record) -> str:
        parts = []
        for label, path in self.params.context_fields.items():
            value = record_value(record, path)
            if value in (None, "", 0, False) or (isinstance(value, (list, dict)) and not value):
                continue
            text = ",".join(str(item) for item in value) if isinstance(value, list) else str(value)
            parts.append(f"{label}={text}")
        return CONTEXT_SEPARATOR.join(parts)

    def _build_one(self, record: Record, group_key: str, output: TaskOutput) -> None:
        blocked = self.firewall.check(record)
        if blocked is not None:
            output.drops.append((FIREWALL_STEP, record, blocked))
            return
        role = record_value(record, self.params.role_from)
        if role not in self.params.instructable_roles:
            instructable = ", ".join(sorted(self.params.instructable_roles))
            why = f"{self.params.role_from} {role!r} is not instructable (instructable: {instructable})"
            output.drops.append((TASK_STEP, record, Drop(Reason.not_instructable, (why,))))
            return
        if not record.text or record.text.isspace():
            output.drops.append((TASK_STEP, record, Drop(Reason.empty_content, ("no response text",))))
            return
        body = {
            "instruction": self.render_instruction(record),
            "context": self.render_context(record),
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
        return self.params.quality_scores.get(record.category.value) if record.category else None

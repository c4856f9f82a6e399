from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from distill.grouping import Group, display_key
from distill.hashing import sha256_hex
from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.tasks.base import TASK_STEP, TASKS, Example, Task, TaskOutput, TaskParams, make_example
from distill.tasks.coverage_instances import InstanceFile, InstanceSpec, load_instance_file
from distill.tasks.coverage_package import PackageBuilder, PackageInputs, parse_candidate

MAX_CLEAN_NAME = 64


class CoverageParams(TaskParams):
    instances: str | None = None
    """The instance file (JSON): unit weights, texts and kinds per group key. None: kinds from unit ids only."""
    include_zero_coverage: bool = False
    default_unit_weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)

    @field_validator("instances")
    @classmethod
    def _readable_instance_file(cls, path: str | None) -> str | None:
        if path is not None:
            load_instance_file(path)
        return path


def package_directory(group_key: str) -> str:
    """`<clean group name>-<8 hex of sha256(group key)>`: letters, digits, `_` and `-` only, so no name climbs out
    of `coverage/`, and the hash keeps groups whose clean names agree apart."""
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", display_key(group_key)).strip("_-")[:MAX_CLEAN_NAME] or "group"
    return f"{clean}-{sha256_hex(group_key)[:8]}"


@TASKS.register("coverage")
class CoverageTask(Task):
    """Memory-coverage packages: one directory per group (the instance) under `coverage/`, each holding the
    experiences, evidence units, queries, candidate memories, the sparse coverage matrix, annotation decisions,
    `instance.json`, a generation manifest hashing them, and a README (contract: docs/coverage-package.md).

    Every record is one candidate memory and is used by its group's package, unless its metadata breaks the candidate
    contract (a coverage value outside 0..1, a non-integer time_index, ...): then it is a `schema_violation`.
    The group key chooses the instance in `task.instances`; a package's `split` is the side its group fell on.
    """

    kind = "coverage"
    Params = CoverageParams
    schema = "coverage_package"
    writer = "coverage_packages"
    params: CoverageParams

    def __init__(self, params: CoverageParams) -> None:
        super().__init__(params)
        self.instance_file = load_instance_file(params.instances) if params.instances else InstanceFile()
        self.instance_file_entry = None
        if params.instances:
            path = Path(params.instances).expanduser()
            self.instance_file_entry = {"name": path.name, "sha256": sha256_hex(path.read_bytes())}

    def build(self, groups: Sequence[Group]) -> TaskOutput:
        output = TaskOutput()
        for group in groups:
            self._build_package(group, output)
        return output

    def _instance(self, group_key: str) -> tuple[str, InstanceSpec | None]:
        name = display_key(group_key)
        return name, self.instance_file.instances.get(name)

    def _candidates(
        self, group_key: str, records: Sequence[Record]
    ) -> tuple[PackageInputs, list[tuple[Record, tuple[str, ...]]]]:
        """(the package's inputs but its split, the records that are no candidate with their problems)."""
        name, instance = self._instance(group_key)
        instance = instance or InstanceSpec()
        instance_id = instance.instance_id or name or "unnamed"
        candidates, rejected = [], []
        for record in records:
            parsed = parse_candidate(record, instance_id)
            (rejected if isinstance(parsed, tuple) else candidates).append((record, parsed))
        inputs = PackageInputs(
            instance_id, instance, [c for _, c in candidates], "",
            self.params.include_zero_coverage, self.params.default_unit_weight,
        )
        return inputs, rejected

    def _build_package(self, group: Group, output: TaskOutput) -> None:
        name, instance = self._instance(group.key)
        if instance is None:
            output.counts["groups_without_instance"] += 1
        inputs, rejected = self._candidates(group.key, group.records)
        for record, problems in rejected:
            output.drop(TASK_STEP, [record], Drop(Reason.schema_violation, problems))
        if not inputs.candidates:
            return
        # A package that would break its schema (a group key no id may hold, e.g. with a newline) is refused here,
        # while its records can still be quarantined, never at write time after the ledger closed.
        from distill.output.writers import package_errors  # the writer's own check, run before the ledger closes

        errors = package_errors(PackageBuilder(replace(inputs, split="all")).files())
        if errors:
            records = [c.record for c in inputs.candidates]
            output.drop(TASK_STEP, records, Drop(Reason.schema_violation, (f"group {name!r}: {errors[0]}",)))
            return
        body = {
            "group": name,
            "instance_id": inputs.instance_id,
            "directory": package_directory(group.key),
            "candidate_count": len(inputs.candidates),
        }
        output.examples.append(make_example("coverage", body, [c.record for c in inputs.candidates], group.key))

    def package_files(self, example: Example, side: str) -> tuple[PackageBuilder, dict[str, Any]]:
        """The builder and files of one group's package (its split the side it fell on)."""
        inputs, _ = self._candidates(example.group_key, example.records)
        builder = PackageBuilder(replace(inputs, split=side))
        return builder, builder.files()

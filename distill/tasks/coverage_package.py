"""One memory-coverage package: the rows of each file, built from one group's candidate records and its instance.

Pure functions of (instance, candidates, split): no clock, no randomness, every file sorted as the contract says
(`docs/coverage-package.md`), so two exports of the same input are byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.hashing import canonical_json, sha256_hex
from distill.record import Record
from distill.sources.base import validation_messages
from distill.tasks.coverage_instances import InstanceSpec, UnitId, proposition_id, state_of
from distill.tokens import token_length

SCHEMA_VERSION = 1
RAW_SPAN = "raw_span"
NOT_ADJUDICATED = "not_adjudicated"
COVERAGE_CELL = "coverage_cell"
INSTANCE_FILE = "instance.json"
GENERATION_MANIFEST = "candidate_generation_manifest.json"
# A memory writer may read the experiences only; what the package scores it with is off limits.
ALLOWED_INPUTS = ("experiences.jsonl",)
FORBIDDEN_INPUTS = ("annotation_decisions.jsonl", "coverage_matrix.jsonl", "evidence_units.jsonl", "queries.jsonl")

Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class CandidateFacts(BaseModel):
    """What a candidate record carries in `metadata` (other metadata keys are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    representation_type: UnitId = "unspecified"
    generator: str | None = None
    time_index: int = Field(default=0, ge=0, strict=True)
    confidence: Finite | None = None
    estimated_value: Finite | None = None
    estimated_coverage: dict[UnitId, Finite] = {}
    estimator_model: str | None = None
    coverage: dict[UnitId, Fraction] = {}
    coverage_rationale: dict[UnitId, str] = {}
    cost: Finite | None = None
    serialized: str | None = None


@dataclass(frozen=True)
class Candidate:
    record: Record
    facts: CandidateFacts
    experience_id: str

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def text(self) -> str:
        return self.record.text or ""

    @property
    def cost_tokens(self) -> int:
        """`tokens_used` when the log has it, else the same length proxy stats.json uses."""
        return token_length(self.record)[0]

    def time_key(self) -> tuple[int, str]:
        return (self.facts.time_index, self.id)

    def annotator_ids(self) -> list[str]:
        return [self.facts.estimator_model] if self.facts.estimator_model else []

    def covered(self) -> dict[str, float]:
        return {unit: value for unit, value in self.facts.coverage.items() if value > 0}


def parse_candidate(record: Record, instance_id: str) -> Candidate | tuple[str, ...]:
    """The record as a candidate, or the problems that keep it out (as `metadata.KEY: message` lines)."""
    try:
        facts = CandidateFacts.model_validate(record.metadata)
    except ValidationError as error:
        return tuple(f"metadata.{message}" for message in validation_messages(error))
    return Candidate(record, facts, record.session_id or f"{instance_id}:synthetic")


def coverage_label(value: float) -> str:
    if value >= 1.0:
        return "full"
    if value >= 0.75:
        return "partial_strong"
    if value >= 0.5:
        return "partial_weak"
    return "hint_only" if value > 0 else "none"


@dataclass(frozen=True)
class PackageInputs:
    instance_id: str
    instance: InstanceSpec
    candidates: Sequence[Candidate]
    split: str
    include_zero_coverage: bool
    default_unit_weight: float


class PackageBuilder:
    """Builds every file's rows of one package. Candidates are taken in id order; units in id order."""

    def __init__(self, inputs: PackageInputs) -> None:
        self.inputs = inputs
        self.instance = inputs.instance
        self.candidates = sorted(inputs.candidates, key=lambda c: c.id)
        self.spans: dict[str, list[Candidate]] = {unit: [] for unit in self.instance.named_units()}
        for candidate in sorted(self.candidates, key=Candidate.time_key):
            for unit in candidate.covered():
                self.spans.setdefault(unit, []).append(candidate)
        self.unit_ids = sorted(self.spans)
        self.generation_config = self._generation_config()
        self.generation_config_hash = sha256_hex(canonical_json(self.generation_config))

    def _ids(self, what: str, number: int, width: int) -> str:
        return f"{self.inputs.instance_id}:{what}:{number:0{width}d}"

    def unit_weight(self, unit: str) -> float:
        return self.instance.unit_weights.get(unit, self.inputs.default_unit_weight)

    def _generation_config(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "instance_id": self.inputs.instance_id,
            "seed": self.instance.seed,
            "distribution": self.instance.distribution,
            "candidate_count": len(self.candidates),
            "unit_count": len(self.unit_ids),
            "generator": sorted({c.facts.generator or "unknown" for c in self.candidates}),
        }

    def experiences(self) -> list[dict[str, Any]]:
        by_experience: dict[str, list[Candidate]] = {}
        for candidate in sorted(self.candidates, key=Candidate.time_key):
            by_experience.setdefault(candidate.experience_id, []).append(candidate)
        rows = []
        for experience_id, members in by_experience.items():
            raw = [c for c in members if c.facts.representation_type == RAW_SPAN]
            rows.append({
                "experience_id": experience_id,
                "session_id": experience_id,
                "timestamp": members[0].facts.time_index,
                "text": (raw or members)[0].text,
                "source_span_ids": [c.id for c in members],
                "split": self.inputs.split,
                "visible_unit_ids": sorted({unit for c in members for unit in c.covered()}),
            })
        return sorted(rows, key=lambda row: (row["timestamp"], row["experience_id"]))

    def evidence_units(self) -> list[dict[str, Any]]:
        rows = []
        for unit in self.unit_ids:
            spans = self.spans[unit]
            kind = self.instance.kind_of(unit)
            rows.append({
                "unit_id": unit,
                "kind": kind,
                "canonical_text": self.instance.unit_texts.get(unit, unit),
                "source_spans": [
                    {"span_id": c.id, "experience_id": c.experience_id, "timestamp": c.facts.time_index, "text": c.text}
                    for c in spans
                ],
                "timestamp": spans[0].facts.time_index if spans else 0,
                "state": state_of(kind),
                "proposition_id": proposition_id(unit),
                "annotator_ids": sorted({a for c in spans for a in c.annotator_ids()}),
                "adjudication_status": NOT_ADJUDICATED,
                "unit_weight": self.unit_weight(unit),
            })
        return rows

    def queries(self) -> list[dict[str, Any]]:
        rows = []
        for number, unit in enumerate(self.unit_ids):
            default_question = f"What does the memory hold about {proposition_id(unit)}?"
            question = self.instance.unit_questions.get(unit, default_question)
            rows.append({
                "query_id": self._ids("objective_unit", number, 4),
                "question": question,
                "answer": self.instance.unit_texts.get(unit, unit),
                "category": self.instance.kind_of(unit),
                "required_unit_ids": [unit],
                "answer_session_ids": sorted({c.experience_id for c in self.spans[unit]}),
                "split": self.inputs.split,
                "unit_weight": self.unit_weight(unit),
            })
        return rows

    def candidate_memories(self) -> list[dict[str, Any]]:
        rows = []
        for c in self.candidates:
            facts = c.facts
            rows.append({
                "candidate_id": c.id,
                "experience_id": c.experience_id,
                "candidate_group": c.record.group_id or c.experience_id,
                "representation_type": facts.representation_type,
                "text": c.text,
                "serialized": facts.serialized if facts.serialized is not None else c.text,
                "cost_tokens": c.cost_tokens,
                "cost": facts.cost if facts.cost is not None else float(c.cost_tokens),
                "generator_id": facts.generator or "unknown",
                "generation_config_hash": self.generation_config_hash,
                "time_index": facts.time_index,
                "confidence": facts.confidence,
                "estimated_value": facts.estimated_value,
                "estimated_coverage": dict(sorted(facts.estimated_coverage.items())),
                "estimator_model": facts.estimator_model,
            })
        return rows

    def coverage_matrix(self) -> list[dict[str, Any]]:
        rows = []
        for c in self.candidates:
            units = self.unit_ids if self.inputs.include_zero_coverage else sorted(c.covered())
            for unit in units:
                value = c.facts.coverage.get(unit, 0.0)
                rows.append({
                    "candidate_id": c.id,
                    "experience_id": c.experience_id,
                    "candidate_group": c.record.group_id or c.experience_id,
                    "unit_id": unit,
                    "coverage": value,
                    "coverage_label": coverage_label(value),
                    "rationale": c.facts.coverage_rationale.get(unit),
                    "source_span_ids": [c.id] if value > 0 else [],
                    "annotator_ids": c.annotator_ids(),
                    "adjudication_status": NOT_ADJUDICATED,
                })
        return rows

    def annotation_decisions(self, matrix: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "record_id": self._ids("coverage", number, 6),
                "record_type": COVERAGE_CELL,
                "decision": cell["coverage_label"],
                "primary_annotator": cell["annotator_ids"][0] if cell["annotator_ids"] else None,
                "verifier": None,
                "adjudicator": None,
                "notes": cell["rationale"],
                "candidate_id": cell["candidate_id"],
                "unit_id": cell["unit_id"],
            }
            for number, cell in enumerate(matrix)
        ]

    def instance_json(self, matrix: Sequence[dict[str, Any]]) -> dict[str, Any]:
        kinds = {unit: self.instance.kind_of(unit) for unit in self.unit_ids}
        return {
            "schema_version": SCHEMA_VERSION,
            "instance_id": self.inputs.instance_id,
            "seed": self.instance.seed,
            "distribution": self.instance.distribution,
            "unit_weights": {unit: self.unit_weight(unit) for unit in self.unit_ids},
            "current_unit_ids": [u for u, k in kinds.items() if k == "current_truth"],
            "invalidation_unit_ids": [u for u, k in kinds.items() if k == "invalidation"],
            "stale_unit_ids": [u for u, k in kinds.items() if k == "stale_or_superseded"],
            "candidate_count": len(self.candidates),
            "coverage_cell_count": len(self.candidates) * len(self.unit_ids),
            "positive_cell_count": sum(1 for cell in matrix if cell["coverage"] > 0),
        }

    def files(self) -> dict[str, Any]:
        """File name -> rows (JSONL files) or object (instance.json), in the order the contract lists them."""
        matrix = self.coverage_matrix()
        return {
            "experiences.jsonl": self.experiences(),
            "evidence_units.jsonl": self.evidence_units(),
            "queries.jsonl": self.queries(),
            "candidate_memories.jsonl": self.candidate_memories(),
            "coverage_matrix.jsonl": matrix,
            "annotation_decisions.jsonl": self.annotation_decisions(matrix),
            INSTANCE_FILE: self.instance_json(matrix),
        }


def generation_manifest(
    files: dict[str, Any],
    generation_config: dict[str, Any],
    generation_config_hash: str,
    hashes: dict[str, str],
    instance_file: dict[str, Any] | None,
) -> dict[str, Any]:
    """The package's manifest: its generation config and hash, and the sha256 of exactly the seven files before it."""
    candidates = files["candidate_memories.jsonl"]
    generators: dict[str, int] = {}
    for row in candidates:
        generators[row["generator_id"]] = generators.get(row["generator_id"], 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "instance_id": generation_config["instance_id"],
        "generation_config": generation_config,
        "generation_config_hash": generation_config_hash,
        "generators": dict(sorted(generators.items())),
        "allowed_inputs": list(ALLOWED_INPUTS),
        "forbidden_inputs": list(FORBIDDEN_INPUTS),
        "cost": {
            "cost_tokens": sum(row["cost_tokens"] for row in candidates),
            "cost": sum(row["cost"] for row in candidates),
        },
        "instance_file": instance_file,
        "split_hashes": dict(sorted(hashes.items())),
        "counts": {name: len(rows) for name, rows in files.items() if name.endswith(".jsonl")},
    }


def package_readme(directory: str, group: str, instance: dict[str, Any], counts: dict[str, int], dense: bool) -> str:
    matrix = (
        "`coverage_matrix.jsonl` lists every (candidate, unit) cell, zero cells included (label `none`)."
        if dense
        else "`coverage_matrix.jsonl` is sparse: a (candidate, unit) cell that is not listed has coverage 0."
    )
    return f"""# Memory-coverage package `{directory}`

Which candidate memories cover which evidence units of one instance, inspectable without rerunning anything.
Written by `distill` (task `coverage`) from the records of group `{group}`.

- instance: `{instance["instance_id"]}` (seed {instance["seed"]})
- distribution: `{instance["distribution"]}`
- candidates: {instance["candidate_count"]}
- evidence units: {counts["evidence_units.jsonl"]}
- positive coverage cells: {instance["positive_cell_count"]} of {instance["coverage_cell_count"]}

{matrix}
`candidate_generation_manifest.json` holds the sha256 of the six JSONL files and `instance.json`; a memory writer
may read `experiences.jsonl` only.
"""

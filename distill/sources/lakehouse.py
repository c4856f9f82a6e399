"""The lakehouse layout: scored runs joined with the evidence they score, partition by partition.

```
ROOT/data/scored-runs/YYYY/MM/DD/<stem>.jsonl   one ScoredRun per line
ROOT/data/evidence/YYYY/MM/DD/<stem>.jsonl      one EvidenceRecord per line (same relative path)
```
"""

from __future__ import annotations

from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from distill.errors import DistillError
from distill.hashing import file_sha256
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin
from distill.output.files import shown_path
from distill.sources.base import SOURCES, FileSource, Parsed, SourceParams
from distill.sources.files import numbered_lines, read_bytes, resolve_files, with_compression

SCORED_DIR = Path("data/scored-runs")
EVIDENCE_DIR = Path("data/evidence")
PARSE_STEP = "parse"
SCORED_SUFFIXES = with_compression((".jsonl",))

# Scored-run keys the join consumes; every other key of either row is kept under `metadata`.
_SCORED_KEYS = {"evidence_run_id", "evidence_task_id", "category", "reasons", "provenance"}
_EVIDENCE_KEYS = {"run_id", "task_id", "text", "source_files", "provenance", "metadata"}


class LakehouseParams(SourceParams):
    root: str


class EvidenceIndex:
    """One evidence file, read once: run id -> its first evidence row. Unreadable lines are counted, not rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        self.unreadable = 0
        self.lines = 0
        self.sha256: str | None = None
        if not path.is_file():
            return
        data = read_bytes(path, "source.root")
        self.sha256 = file_sha256(path)
        for line in data.splitlines():
            if not line.strip():
                continue
            self.lines += 1
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.unreadable += 1
                continue
            run_id = row.get("run_id") if isinstance(row, dict) else None
            if isinstance(run_id, (str, int)) and not isinstance(run_id, bool):
                self.rows.setdefault(str(run_id), row)
            else:
                self.unreadable += 1

    def missing_reason(self, run_id: str) -> str:
        if self.sha256 is None:
            return f"no evidence file {self.path.name} for this partition"
        return f"no evidence row with run_id {run_id!r} in the evidence file"


def _upstream_provenance(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(the provenance, None) when it has a source_file and a sig_hash, else (None, what is wrong)."""
    if not isinstance(value, dict):
        return None, "the scored row has no provenance object"
    absent = [key for key in ("source_file", "sig_hash") if value.get(key) in (None, "")]
    if absent:
        return None, f"provenance lacks {' and '.join(absent)}"
    return value, None


def joined_row(scored: dict[str, Any], evidence: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """One ScoredRun + its EvidenceRecord as a row of record-field names (the field map applies to it next).

    The run id is the record id; the scorer's recorded_at is created_at; lineage is the scored row's provenance; what has no record field (model role and
    name, retrieved context, rationales, the evidence's own source file, recorded_at, ...) goes under `metadata`."""
    evidence_provenance = evidence.get("provenance")
    evidence_metadata = evidence.get("metadata")
    metadata: dict[str, Any] = dict(evidence_metadata) if isinstance(evidence_metadata, dict) else {}
    metadata.update({key: value for key, value in evidence.items() if key not in _EVIDENCE_KEYS})
    metadata.update({key: value for key, value in scored.items() if key not in _SCORED_KEYS})
    if "reasons" in scored:
        metadata["reasons"] = scored["reasons"]
    if isinstance(evidence_provenance, dict) and evidence_provenance.get("source_file") is not None:
        metadata["evidence_source_file"] = evidence_provenance["source_file"]
    if provenance.get("recorded_at") is not None:
        metadata["recorded_at"] = provenance["recorded_at"]
    task_id = evidence.get("task_id", scored.get("evidence_task_id"))
    if scored.get("evidence_task_id") not in (None, task_id):
        metadata["evidence_task_id"] = scored["evidence_task_id"]  # the scorer saw another task id: keep it visible
    run_id = scored["evidence_run_id"]
    row = {
        "id": run_id,
        "run_id": run_id,
        "task_id": task_id,
        "created_at": provenance.get("recorded_at"),
        "role": "assistant",
        "text": evidence.get("text"),
        "category": scored.get("category"),
        "source_files": evidence.get("source_files"),
        "provenance": {key: value for key, value in provenance.items() if key != "recorded_at"},
        "metadata": metadata,
    }
    return {key: value for key, value in row.items() if value is not None}


@SOURCES.register("lakehouse")
class LakehouseSource(FileSource):
    """Scored runs joined with their evidence rows (`source.root`), partitions and lines in sorted order.

    Each scored-runs file is read with the evidence file of the same relative path, and that file is read once.
    Quarantined at the source: a scored line that is not a JSON object (`schema_violation`; not UTF-8:
    `invalid_utf8`); provenance missing or without source_file / sig_hash (`missing_provenance`); no
    `evidence_run_id`, or no evidence row for it (`missing_source_run_id`). Origin is the scored-runs file relative
    to the root and its line.
    """

    kind = "lakehouse"
    Params = LakehouseParams
    params: LakehouseParams


    def check(self) -> None:
        self.root = Path(self.params.root).expanduser()
        scored_dir = self.root / SCORED_DIR
        if not scored_dir.is_dir():
            raise DistillError(f"source.root: no {SCORED_DIR.as_posix()}/ directory under {self.params.root}")
        self.files = resolve_files(str(scored_dir), "source.root", SCORED_SUFFIXES)[1]

    def read_file(self, path: Path, relative: str) -> Iterator[Parsed]:
        """One scored-runs file joined with its evidence file (a map shard); appends both to the inputs."""
        evidence = EvidenceIndex(self.root / EVIDENCE_DIR / path.relative_to(self.root / SCORED_DIR))
        for line, origin in numbered_lines(path, relative, self._inputs, key="source.root", role="scored"):
            yield self._parse_scored(line, origin, evidence)
        if evidence.sha256 is not None:
            self._inputs.append(
                {
                    "path": shown_path(evidence.path.resolve()),
                    "sha256": evidence.sha256,
                    "rows": evidence.lines,
                    "role": "evidence",
                    "unreadable_rows": evidence.unreadable,
                }
            )

    def input_lines(self, inputs: list[dict[str, Any]]) -> int:
        return sum(entry["rows"] for entry in inputs if entry.get("role") == "scored")

    def _parse_scored(self, line: bytes, origin: Origin, evidence: EvidenceIndex) -> Parsed:
        # Quarantine rows are keyed by the line (origin), not the run id: a run id may repeat across scored rows,
        # and the ledger needs one key per input row.
        row_key = origin.label()
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raw = line.decode("utf-8", errors="replace").rstrip("\r\n")
            return QuarantineRow(PARSE_STEP, Reason.invalid_utf8, (f"byte {error.start}: {error.reason}",),
                                 row_key, origin, raw)
        try:
            scored = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            return QuarantineRow(PARSE_STEP, Reason.schema_violation, (f"scored line is not JSON: {error}",),
                                 row_key, origin, text.rstrip("\r\n"))
        if not isinstance(scored, dict):
            why = f"scored row is a JSON {type(scored).__name__}, not an object"
            return QuarantineRow(PARSE_STEP, Reason.schema_violation, (why,), row_key, origin, scored)
        run_id = scored.get("evidence_run_id")
        run_id = str(run_id) if isinstance(run_id, (str, int)) and not isinstance(run_id, bool) and run_id != "" else None
        detail = {"run_id": run_id} if run_id else None
        provenance, problem = _upstream_provenance(scored.get("provenance"))
        if provenance is None:
            return QuarantineRow(PARSE_STEP, Reason.missing_provenance, (problem,), row_key, origin, scored, detail)
        if run_id is None:
            why = "the scored row has no evidence_run_id"
            return QuarantineRow(PARSE_STEP, Reason.missing_source_run_id, (why,), row_key, origin, scored)
        evidence_row = evidence.rows.get(run_id)
        if evidence_row is None:
            return QuarantineRow(PARSE_STEP, Reason.missing_source_run_id, (evidence.missing_reason(run_id),),
                                 row_key, origin, scored, detail)
        parsed = self.to_record(joined_row({**scored, "evidence_run_id": run_id}, evidence_row, provenance),
                                origin, run_id)
        if isinstance(parsed, QuarantineRow):
            return replace(parsed, record_id=row_key, detail=detail)
        return parsed

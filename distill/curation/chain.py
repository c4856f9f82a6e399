"""The curation chain run in sequence over records in memory: the semantics the partitioned plan reproduces
(`distill.plan`), kept as the reference the step tests run against."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from distill.quarantine import Drop, Ledger, QuarantineRow
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import GlobalStep, RecordStep, Step, Verdict

log = logging.getLogger(__name__)


@dataclass
class StageReport:
    step: str
    kind: str
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        entry = {"step": self.step, "kind": self.kind, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}
        entry.update(self.extra)
        return entry


def batches(records: Sequence[Record], size: int) -> Iterator[Sequence[Record]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def run_step(step: Step, records: Sequence[Record], batch_size: int) -> list[Verdict]:
    if isinstance(step, RecordStep):
        return [verdict for batch in batches(records, batch_size) for verdict in step.map_batch(batch)]
    if isinstance(step, GlobalStep):
        keys = [step.keys(batch) for batch in batches(records, batch_size)]
        drops = step.decide(keys)
        return [verdict for batch in batches(records, batch_size) for verdict in step.filter(batch, drops)]
    raise TypeError(f"{type(step).__name__} is neither a RecordStep nor a GlobalStep")


def run_chain(
    steps: Sequence[Step], records: list[Record], ledger: Ledger, batch_size: int
) -> tuple[list[Record], list[Record], list[StageReport]]:
    """Runs each step over the records in order. Returns (kept, dropped, one report per step)."""
    dropped_records: list[Record] = []
    reports: list[StageReport] = []
    for step in steps:
        report = StageReport(step.name, step.kind)
        started = time.perf_counter()
        verdicts = run_step(step, records, batch_size)
        if len(verdicts) != len(records):
            raise RuntimeError(f"step {step.name!r} returned {len(verdicts)} verdicts for {len(records)} records")
        kept: list[Record] = []
        for record, verdict in zip(records, verdicts):
            if isinstance(verdict, Drop):
                ledger.drop(step.name, record, verdict)
                dropped_records.append(record)
                report.dropped[verdict.reason.value] += 1
            else:
                kept.append(verdict)
        report.kept = len(kept)
        report.seconds = time.perf_counter() - started
        report.extra = step.manifest_extra()
        reports.append(report)
        log.info("step %s: kept %d, dropped %d (%.2fs)", step.name, report.kept, sum(report.dropped.values()), report.seconds)
        records = kept
    return records, dropped_records, reports


def read_records(settings: Any, ledger: Ledger) -> tuple[list[Record], StageReport]:
    """Every input row as a Record or a parse-stage quarantine row, in (created_at, id) order; a repeated id is a
    `duplicate` (the first row read keeps it). The in-memory counterpart of the plan's map + repeated-id check."""
    report = StageReport("parse", settings.source.kind)
    records: list[Record] = []
    first_seen: dict[str, Record] = {}
    for parsed in settings.source.read():
        ledger.input_rows += 1
        if isinstance(parsed, QuarantineRow):
            ledger.quarantine(parsed)
            report.dropped[parsed.reason.value] += 1
            continue
        earlier = first_seen.setdefault(parsed.id, parsed)
        if earlier is not parsed:
            where = earlier.origin.label() if earlier.origin else "an earlier row"
            ledger.quarantine(QuarantineRow(
                "parse", Reason.duplicate, (f"id {parsed.id!r} already read at {where}",),
                parsed.id, parsed.origin, parsed.to_json(),
            ))
            report.dropped[Reason.duplicate.value] += 1
            continue
        records.append(parsed)
    report.kept = len(records)
    records.sort(key=Record.order_key)
    return records, report

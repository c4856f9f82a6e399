"""Documents for people, rendered from the run's own data (never by re-reading the dataset files) before
`manifest.json` is written, and listed in its `outputs`: the run report, the dataset card.

A document is a function `(digest, output_dir) -> manifest output entry | None` registered in `DOCUMENTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLES_PER_REASON = 5
SAMPLES_PER_FILE = 3


@dataclass
class RunDigest:
    """Everything a document may show, bounded in size whatever the input: the manifest's data (without the
    documents' own output entries), stats.json, and the first few quarantine rows per reason (in quarantine order,
    redacted as the quarantine is) and the first few lines of each dataset file."""

    manifest: dict[str, Any]
    stats: dict[str, Any] | None
    quarantine_samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    example_samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Quarantine rows of the records the stages' extras name (see `named_records`), by record id.
    named_samples: dict[str, dict[str, Any]] = field(default_factory=dict)


def named_records(stages: list[dict[str, Any]]) -> set[str]:
    """Record ids that stage extras point at for a document to show (bounded by each step): the duplicate of each
    of near_dedup's largest clusters, each eval set's first contaminated record."""
    named: set[str] = set()
    for stage in stages:
        named.update(c["duplicate_record"] for c in stage.get("largest_clusters", ()) if c.get("duplicate_record"))
        named.update(hit["record_id"] for hit in stage.get("first_hits", {}).values() if hit.get("record_id"))
    return named


Document = Callable[[RunDigest, Path], "dict[str, Any] | None"]
DOCUMENTS: list[Document] = []


def write_documents(digest: RunDigest, output_dir: Path) -> list[dict[str, Any]]:
    """Renders every registered document; returns their manifest output entries."""
    entries = []
    for document in DOCUMENTS:
        entry = document(digest, output_dir)
        if entry is not None:
            entries.append(entry)
    return entries


# The documents register themselves on import; imported last, as they use the names above.
from distill.output import report  # noqa: E402,F401

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import model_validator

from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record, replaced
from distill.curation.secrets import BUILTIN_PATTERNS, MissingLibrary, Scrubber, compile_patterns, library_detectors
from distill.curation.steps.base import STEPS, RecordStep, Step, StepParams, Verdict


class ScrubSecretsParams(StepParams):
    action: Literal["redact", "drop"] = "redact"
    library: Literal["detect_secrets", "none"] = "detect_secrets"
    kinds: tuple[str, ...] | None = None
    patterns: dict[str, str] = {}

    @model_validator(mode="after")
    def _usable(self) -> ScrubSecretsParams:
        unknown = sorted(set(self.kinds or ()) - set(BUILTIN_PATTERNS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown} (known: {', '.join(BUILTIN_PATTERNS)})")
        for name, pattern in self.patterns.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"patterns.{name}: not a regular expression ({error})") from None
        if self.library == "detect_secrets":
            try:
                library_detectors()
            except MissingLibrary as error:
                raise ValueError(str(error)) from None
        return self


@STEPS.register("scrub_secrets")
class ScrubSecrets(RecordStep):
    """Finds secrets and PII (API keys and tokens, private keys, passwords in URLs, emails, phone numbers, IPs) in
    a record's `text` and `tool_calls`. `action: redact` (default) replaces each with a typed placeholder such as
    `[REDACTED:email]` and keeps the record; `action: drop` quarantines the record (`secret`).

    Detectors: distill's own patterns (`kinds` selects among them, default all), the vendor token patterns of
    detect-secrets (`library: detect_secrets`, the `secrets` extra; `none` to go without) and your own `patterns`
    (name -> regex; a group named `secret` limits the redaction to it). When this step is in the chain, quarantine
    rows are redacted with the same detectors (see `redact_quarantine_row`). Counts per kind go to the manifest.
    """

    kind = "scrub_secrets"
    Params = ScrubSecretsParams
    reasons = (Reason.secret,)
    params: ScrubSecretsParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        builtin = {kind: BUILTIN_PATTERNS[kind] for kind in (p.kinds if p.kinds is not None else BUILTIN_PATTERNS)}
        detectors = compile_patterns({**builtin, **p.patterns})
        if p.library == "detect_secrets":
            detectors += library_detectors()
        self.scrubber = Scrubber(detectors)

    def map_batch(self, batch: Sequence[Record]) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for record in batch:
            found: Counter[str] = Counter()
            text = self.scrubber.scrub_value(record.text, found) if record.text else record.text
            calls = self.scrubber.scrub_value(record.tool_calls, found) if record.tool_calls else record.tool_calls
            if not found:
                verdicts.append(record)
                continue
            self.counters.update({f"kind:{kind}": n for kind, n in found.items()})
            self.counters["records_with_secrets"] += 1
            if self.params.action == "drop":
                kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(found.items()))
                verdicts.append(Drop(Reason.secret, (f"found {kinds}",), {"found": dict(sorted(found.items()))}))
            else:
                verdicts.append(replaced(record, text=text, tool_calls=calls))
        return verdicts

    def redact_quarantine_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A quarantine row (as JSON) with its record, errors and detail scrubbed: nothing the step would hide from
        the dataset reappears in the quarantine."""
        unused: Counter[str] = Counter()
        for field in ("record", "errors", "detail"):
            if row.get(field) is not None:
                row[field] = self.scrubber.scrub_value(row[field], unused)
        return row

    def manifest_extra(self) -> dict[str, Any]:
        label = "redactions" if self.params.action == "redact" else "found"
        found = {key.removeprefix("kind:"): n for key, n in self.counters.items() if key.startswith("kind:")}
        return {label: dict(sorted(found.items())), "records_with_secrets": self.counters["records_with_secrets"]}

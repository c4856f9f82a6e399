"""Finding secrets and PII in text, and replacing them with typed placeholders (`[REDACTED:email]`).

Two sources of detectors: distill's own patterns (PII the secret scanners do not cover: emails, phone numbers,
IP addresses, passwords in URLs, whole private-key blocks, a few common token shapes), and, when the `secrets`
extra is installed, the vendor token patterns of Yelp's detect-secrets (AWS, GitHub, GitLab, Slack, Stripe, Twilio,
npm, PyPI, JWT, ...), used as a pattern library: its regexes run here, on our text, without its file scanner.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = "[REDACTED:{kind}]"

# kind -> regex. A group named `secret` limits the redaction to that part (the password, not the URL).
BUILTIN_PATTERNS: dict[str, str] = {
    "private_key": r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    "url_password": r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]+:(?P<secret>[^\s/@]+)@",
    "aws_access_key": r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b",
    "openai_key": r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "google_api_key": r"\bAIza[0-9A-Za-z_-]{35}",
    "stripe_key": r"\b(?:sk|rk|pk)_(?:live|test)_[0-9a-zA-Z]{16,}",
    "jwt": r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
    "bearer_token": r"(?i:\bbearer)\s+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)",
    "password": r"(?i:\b(?:password|passwd|pwd)\b)\s*[:=]\s*(?P<secret>[^\s,;'\"]{4,})",
    "email": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    "phone": r"(?<![\w+.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?![\w.-])",
    "ipv4": r"\b(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\b",
    "ipv6": r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b",
}
# Cheap necessary conditions, checked before a pattern's regex runs (Python's `re` scans every position, so most of
# the cost is spent on text that cannot match): lowercase substrings, one of which must occur, or a digit count.
HINTS: dict[str, tuple[str, ...]] = {
    "private_key": ("private key",),
    "url_password": ("://",),
    "aws_access_key": ("a3t", "akia", "asia", "abia", "acca"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "openai_key": ("sk-",),
    "slack_token": ("xox",),
    "google_api_key": ("aiza",),
    "stripe_key": ("_live_", "_test_"),
    "jwt": ("eyj",),
    "bearer_token": ("bearer",),
    "password": ("password", "passwd", "pwd"),
    "email": ("@",),
}
MIN_DIGITS = {"phone": 7, "ipv4": 4}
MIN_COLONS = {"ipv6": 7}
# detect-secrets plugins left out: the entropy and keyword scanners flag hashes and ids all over agent logs, and
# our own ipv4 pattern covers private addresses as well as public ones.
_SKIPPED_PLUGINS = {"Base64HighEntropyString", "HexHighEntropyString", "KeywordDetector", "IPPublicDetector"}
# detect-secrets' vendor patterns all need a long token (>= 16 characters between spaces), a URL with credentials
# or a key header; text without any of these (most chat text) skips them, which saves most of their cost.
_LONG_TOKEN = 16
_NO_DIGITS = str.maketrans("", "", "0123456789")
_MIN_GROUP_SECRET = 8


class MissingLibrary(RuntimeError):
    pass


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    from_library: bool = False


class _Text:
    """One text and the cheap facts the detectors' preconditions ask about, each computed at most once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lowered: str | None = None
        self._digits: int | None = None
        self._long_token: bool | None = None

    @property
    def lowered(self) -> str:
        if self._lowered is None:
            self._lowered = self.text.lower()
        return self._lowered

    @property
    def digits(self) -> int:
        if self._digits is None:
            self._digits = len(self.text) - len(self.text.translate(_NO_DIGITS))
        return self._digits

    @property
    def long_token(self) -> bool:
        """The precondition every library detector shares: a URL, a private key, or a token of 16+ characters."""
        if self._long_token is None:
            self._long_token = (
                "://" in self.text or "private key" in self.lowered
                or max(map(len, self.text.split()), default=0) >= _LONG_TOKEN
            )
        return self._long_token

    def may_match(self, detector: Detector) -> bool:
        if detector.from_library:
            return self.long_token
        hints = HINTS.get(detector.kind)
        if hints is not None and not any(hint in self.lowered for hint in hints):
            return False
        if self.digits < MIN_DIGITS.get(detector.kind, 0):
            return False
        return self.text.count(":") >= MIN_COLONS.get(detector.kind, 0)


def library_detectors() -> list[Detector]:
    """detect-secrets' regex-based vendor detectors. Raises MissingLibrary when the extra is not installed."""
    try:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.plugins.base import RegexBasedDetector
    except ImportError:
        raise MissingLibrary("detect-secrets is not installed: pip install 'distill[secrets]', or set library=none")
    detectors = []
    for secret_type, plugin in sorted(get_mapping_from_secret_type_to_class().items()):
        if issubclass(plugin, RegexBasedDetector) and plugin.__name__ not in _SKIPPED_PLUGINS:
            kind = re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_")
            detectors.extend(Detector(kind, pattern, from_library=True) for pattern in plugin.denylist)
    return detectors


def compile_patterns(patterns: dict[str, str]) -> list[Detector]:
    return [Detector(kind, re.compile(pattern)) for kind, pattern in patterns.items()]


class Scrubber:
    """Replaces every match of its detectors with `[REDACTED:<kind>]`."""

    def __init__(self, detectors: Iterable[Detector]) -> None:
        self.detectors = list(detectors)
        hints = sorted({hint for d in self.detectors if not d.from_library for hint in HINTS.get(d.kind, ())})
        # One scan for every hint at once: most strings (ids, metadata values, plain chat) hold none, and then no
        # hinted detector needs its own check.
        self.any_hint = re.compile("|".join(map(re.escape, hints))) if hints else None

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, kind) spans in text order; where two detectors overlap, the one listed
        first wins (distill's own patterns come before the library's)."""
        facts = _Text(text)
        hinted = self.any_hint is not None and self.any_hint.search(facts.lowered) is not None
        long_token: bool | None = None
        spans: list[tuple[int, int, str]] = []
        for detector in self.detectors:
            if detector.from_library:
                # The library's ~60 detectors share one precondition: checked once per text, not once per detector.
                if long_token is None:
                    long_token = facts.long_token
                if not long_token:
                    continue
            elif (detector.kind in HINTS and not hinted) or not facts.may_match(detector):
                continue
            for match in detector.pattern.finditer(text):
                start, end = _secret_span(match)
                if end > start and not _overlaps(start, end, spans):
                    spans.append((start, end, detector.kind))
        return sorted(spans)

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        spans = self.find(text)
        found: Counter[str] = Counter(kind for _, _, kind in spans)
        for start, end, kind in reversed(spans):
            text = text[:start] + PLACEHOLDER.format(kind=kind) + text[end:]
        return text, found

    def scrub_value(self, value: Any, found: Counter[str]) -> Any:
        """Every string inside a JSON-like value scrubbed (keys too); counts go into `found`."""
        if isinstance(value, str):
            scrubbed, counts = self.scrub(value)
            found.update(counts)
            return scrubbed
        if isinstance(value, list):
            return [self.scrub_value(item, found) for item in value]
        if isinstance(value, tuple):
            return tuple(self.scrub_value(item, found) for item in value)
        if isinstance(value, dict):
            return {self.scrub_value(k, found): self.scrub_value(v, found) for k, v in value.items()}
        return value


def _overlaps(start: int, end: int, spans: list[tuple[int, int, str]]) -> bool:
    return any(start < taken_end and taken_start < end for taken_start, taken_end, _ in spans)


def _secret_span(match: re.Match[str]) -> tuple[int, int]:
    if "secret" in match.re.groupindex and match.group("secret") is not None:
        return match.span("secret")
    # Library patterns capture the secret itself after some context (`aws ... key = "<40 chars>"`): redact the
    # group when it is long enough to be the secret, else the whole match (`(ghp|gho)_...` captures the prefix).
    for group in range(match.re.groups, 0, -1):
        if match.group(group) is not None and len(match.group(group)) >= _MIN_GROUP_SECRET:
            return match.span(group)
    return match.span()

"""The record model: one logged turn or run output, as every source yields it and every step sees it."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


MAX_INT64 = 2**63 - 1
"""The largest integer a record field holds: what every writer (JSON, Parquet int64) can store."""


class Category(StrEnum):
    accepted = "accepted"
    partially_accepted = "partially_accepted"
    rejected = "rejected"
    needs_human_review = "needs_human_review"


class Label(StrEnum):
    chosen = "chosen"
    rejected = "rejected"


class Role(StrEnum):
    system = "system"
    user = "user"
    assistant = "assistant"
    tool = "tool"


class LifecycleStatus(StrEnum):
    active = "active"
    tombstoned = "tombstoned"
    expired = "expired"
    retired = "retired"
    superseded = "superseded"
    contradicted = "contradicted"


class Provenance(BaseModel):
    """Upstream lineage carried by the logs; checked by steps, never invented by distill."""

    model_config = ConfigDict(extra="allow", frozen=True)

    source_file: str | None = None
    line_offset: int | None = Field(default=None, strict=True, ge=-MAX_INT64 - 1, le=MAX_INT64)
    sig_hash: str | None = None


class Origin(BaseModel):
    """Where distill read the row: a file relative to the source root and its line, or a store uri/version/row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    line: int | None = None
    uri: str | None = None
    version: int | None = None
    row: int | None = None

    def sort_key(self) -> tuple[str, int]:
        return (self.path or self.uri or "", self.line if self.line is not None else (self.row or 0))

    def label(self) -> str:
        if self.path is not None:
            # A line for text files, a row for columnar ones (Parquet).
            return f"{self.path}:{self.line}" if self.line is not None else f"{self.path}#{self.row}"
        return f"{self.uri}@{self.version}#{self.row}"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 (naive means UTC) or epoch seconds -> an aware UTC datetime. Raises ValueError otherwise."""
    if value is None or isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise ValueError("a timestamp must be ISO 8601 text or epoch seconds, not a boolean")
    elif isinstance(value, (int, float)):
        try:
            parsed = datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch seconds {value!r} are outside years 1-9999 UTC") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp or epoch seconds: {value!r}") from None
    else:
        raise ValueError(f"a timestamp must be ISO 8601 text or epoch seconds, got {type(value).__name__}")
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{value!r} is outside years 1-9999 UTC") from None


def format_timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


class Record(BaseModel):
    """One logged turn or run output. Only `id` is required; sources fill what their logs hold."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    id: str = Field(min_length=1)
    run_id: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    external_id: str | None = None
    tenant: str | None = None
    source: str | None = None
    bot_id: str | None = None
    created_at: datetime | None = None
    role: Role | None = None
    text: str | None = None
    category: Category | None = None
    reward: float | None = Field(default=None, strict=True, allow_inf_nan=False)
    reward_source: str | None = None
    group_id: str | None = None
    label: Label | None = None
    rank: int | None = Field(default=None, strict=True, ge=1, le=MAX_INT64)
    lifecycle_status: LifecycleStatus | None = None
    supersedes_id: str | None = None
    superseded_by_id: str | None = None
    embedding: list[float] | None = Field(default=None, strict=True)
    source_files: list[str] | None = None
    tokens_used: int | None = Field(default=None, strict=True, ge=0, le=MAX_INT64)
    tool_calls: list[dict[str, Any]] | None = None
    """Calls an assistant turn makes, in the OpenAI/TRL shape {id?, type: function, function: {name, arguments}}."""
    tool_call_id: str | None = None
    """On a tool turn: the id of the call it answers (None: paired with the calls before it, in order)."""
    name: str | None = None
    reasoning: str | None = None
    """An assistant turn's reasoning (thinking) text, kept apart from `text`."""
    ground_truth: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance | None = None
    origin: Origin | None = None

    @field_validator("created_at", mode="before")
    @classmethod
    def _utc_timestamp(cls, value: Any) -> datetime | None:
        return parse_timestamp(value)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_may_be_null(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("id", "run_id", "session_id", "task_id", "external_id", "group_id", "tool_call_id", mode="before")
    @classmethod
    def _ids_are_text(cls, value: Any) -> Any:
        # Numeric ids are common in logs; keep them, as text, so keys compare the same everywhere.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("ground_truth", mode="before")
    @classmethod
    def _answer_is_text(cls, value: Any) -> Any:
        # A verifier's reference answer is often numeric in logs; reward functions compare it as text.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    def order_key(self) -> tuple[datetime, str]:
        """The conversation order every part of distill uses: (created_at, id), undated records first."""
        return (self.created_at or _EPOCH, self.id)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data, without empty fields (for quarantine rows and debugging)."""
        data = self.model_dump(mode="json", exclude_none=True)
        if not data.get("metadata"):
            data.pop("metadata", None)
        if self.created_at is not None:
            data["created_at"] = format_timestamp(self.created_at)
        return data


RECORD_FIELDS: tuple[str, ...] = tuple(Record.model_fields)

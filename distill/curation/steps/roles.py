"""The `roles` parameter several steps share: which records a step looks at, by role."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from distill.record import Record


def in_roles(records: Iterable[Record], roles: tuple[str, ...] | None, has: Callable[[Record], object]) -> list[Record]:
    """The records for which `has(record)` is truthy and whose role is one of `roles` (any role when None; a record
    without a role only then)."""
    if roles is None:
        return [r for r in records if has(r)]
    wanted = set(roles)
    return [r for r in records if has(r) and r.role is not None and r.role.value in wanted]


def has_text(record: Record) -> bool:
    return record.text is not None

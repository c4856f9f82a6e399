"""Grouping keys: which records belong to one conversation, instance or split unit."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from distill.record import Record, sort_in_order

KeyFunction = Callable[[Record], str]

RECORD_FIELD_KEYS = ("session_id", "run_id", "task_id", "tenant", "source", "bot_id", "group_id")
GROUP_KINDS = ("none", *RECORD_FIELD_KEYS, "external_id_prefix")


def _own_group(record: Record) -> str:
    # A record that lacks the key is a group of its own; the prefix keeps it apart from any real key value.
    return f"\x00record:{record.id}"


def key_function(kind: str, delimiter: str = "#") -> KeyFunction:
    """The function that gives a record's group key under the `kind` grouping."""
    if kind == "none":
        return _own_group
    if kind == "external_id_prefix":

        def prefix(record: Record) -> str:
            if record.external_id is None:
                return _own_group(record)
            return record.external_id.partition(delimiter)[0]

        return prefix
    if kind in RECORD_FIELD_KEYS:

        def by_field(record: Record) -> str:
            value = getattr(record, kind)
            return _own_group(record) if value is None else value

        return by_field
    raise KeyError(f"unknown group key {kind!r} (known: {', '.join(GROUP_KINDS)})")


def display_key(key: str) -> str:
    return key.replace("\x00record:", "record:")


@dataclass
class Group:
    """One group's surviving records in (created_at, id) order, plus the records curation dropped from it."""

    key: str
    records: list[Record]
    dropped: list[Record] = field(default_factory=list)

    def order_key(self):
        return (self.records[0].order_key(), self.key) if self.records else ((), self.key)


def group_records(records: Iterable[Record], dropped: Iterable[Record], key: KeyFunction) -> list[Group]:
    """Groups the kept records (already in (created_at, id) order) and attaches each group's dropped ones."""
    groups: dict[str, Group] = {}
    for record in records:
        group_key = key(record)
        group = groups.get(group_key)
        if group is None:
            groups[group_key] = group = Group(group_key, [])
        group.records.append(record)
    for record in dropped:
        group = groups.get(key(record))
        if group is not None:
            group.dropped.append(record)
    for group in groups.values():
        if len(group.dropped) > 1:  # most groups lost nothing
            sort_in_order(group.dropped)
    return sorted(groups.values(), key=Group.order_key)

"""Named kinds -> distill classes. Configs name a kind; only classes registered here are ever built."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, kind: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if kind in self._entries:
                raise ValueError(f"{self.what} kind {kind!r} registered twice")
            self._entries[kind] = entry
            return entry

        return add

    def get(self, kind: str) -> T:
        try:
            return self._entries[kind]
        except KeyError:
            raise KeyError(f"unknown {self.what} kind {kind!r} (known: {', '.join(self.kinds())})") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries

    def kinds(self) -> list[str]:
        return sorted(self._entries)

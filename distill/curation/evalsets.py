"""Held-out eval sets for decontamination: JSONL rows (`text`, else `prompt`, `question` or `messages`, optional
`id` and `embedding`) or plain text files (one item per non-blank line)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from distill.errors import DistillError

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_FIELDS = ("text", "prompt", "question")


@dataclass(frozen=True)
class EvalItem:
    eval_set: str
    item: str  # the row's `id`, else `file:line`
    text: str
    embedding: tuple[float, ...] | None = None


def eval_files(pattern: str) -> list[Path]:
    """The files a path or glob names, sorted; [] when none."""
    expanded = os.path.expanduser(pattern)
    if glob.has_magic(expanded):
        return sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
    path = Path(expanded)
    return [path] if path.is_file() else []


def eval_set_name(path: Path) -> str:
    name = path.name
    for suffix in (*JSONL_SUFFIXES, ".txt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_eval_items(patterns: list[str], key: str) -> list[EvalItem]:
    """Every item of every named eval set, in file order. Raises DistillError naming `key` on unreadable input."""
    items: list[EvalItem] = []
    for pattern in patterns:
        files = eval_files(pattern)
        if not files:
            raise DistillError(f"{key}: no file matches {pattern}")
        for path in files:
            items.extend(_read(path, key))
    return items


def _read(path: Path, key: str) -> list[EvalItem]:
    name = eval_set_name(path)
    items = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            if not path.name.endswith(JSONL_SUFFIXES):
                items.append(EvalItem(name, where, line.decode("utf-8", errors="replace").strip()))
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise DistillError(f"{key}: {path}:{number}: not JSON ({error})") from None
            text = _item_text(row)
            if text is None:
                raise DistillError(f"{key}: {path}:{number}: no text, prompt, question or messages field")
            embedding = row.get("embedding")
            item_id = row.get("id")
            items.append(
                EvalItem(
                    name,
                    str(item_id) if item_id is not None else where,
                    text,
                    tuple(float(x) for x in embedding) if isinstance(embedding, list) and embedding else None,
                )
            )
    return items


def _item_text(row: Any) -> str | None:
    if not isinstance(row, dict):
        return row if isinstance(row, str) else None
    for field in TEXT_FIELDS:
        if isinstance(row.get(field), str):
            return row[field]
    messages = row.get("messages")
    if isinstance(messages, list):
        return "\n".join(m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    return None

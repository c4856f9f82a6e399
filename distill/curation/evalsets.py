"""Held-out eval sets for decontamination: JSONL rows (`text`, else `prompt`, `problem`, `question` (with its
`choices` when multiple choice) or `messages`; the item id from `id`, else `task_id`; optional `embedding`) or plain
text files (one item per non-blank line). Either may be gzip, zstd, bz2 or xz compressed, as eval sets often ship."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from distill.errors import DistillError
from distill.sources.files import open_input, strip_compression

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_FIELDS = ("text", "prompt", "problem")
ID_FIELDS = ("id", "task_id")


@dataclass(frozen=True)
class EvalItem:
    eval_set: str
    item: str  # the row's `id` (or `task_id`), else `file:line`
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
    name = strip_compression(path.name)
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
    is_jsonl = strip_compression(path.name).endswith(JSONL_SUFFIXES)
    items = []
    with open_input(path, key) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            if not is_jsonl:
                items.append(EvalItem(name, where, line.decode("utf-8", errors="replace").strip()))
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise DistillError(f"{key}: {path}:{number}: not JSON ({error})") from None
            text = _item_text(row)
            if text is None:
                raise DistillError(f"{key}: {path}:{number}: no text, prompt, problem, question or messages field")
            embedding = row.get("embedding")
            item_id = next((row[field] for field in ID_FIELDS if row.get(field) is not None), None)
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
    if isinstance(row.get("question"), str):
        return _with_choices(row["question"], row.get("choices"))
    messages = row.get("messages")
    if isinstance(messages, list):
        return "\n".join(m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    return None


def _with_choices(question: str, choices: Any) -> str:
    """A multiple-choice item is its question and its options (MMLU: a list; ARC: {text: [...], label: [...]}), so an
    example that copies the options is caught too."""
    if isinstance(choices, dict):
        choices = choices.get("text")
    if not isinstance(choices, list):
        return question
    return "\n".join([question, *(str(choice) for choice in choices if isinstance(choice, (str, int, float)))])

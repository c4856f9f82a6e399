"""The base of the chat-log sources: files of logged model calls, each file read as one unit (a map shard) and
merged into one record per conversation turn (`distill.sources.history`)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import PositiveInt

from distill.errors import DistillError
from distill.hashing import file_sha256
from distill.output.files import shown_path
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import Origin
from distill.sources.base import FileSource, Parsed, SourceParams
from distill.sources.files import (
    decode_line,
    numbered_lines,
    read_bytes,
    resolve_files,
    row_label,
    strip_compression,
    with_compression,
)
from distill.sources.history import HistoryMerger
from distill.sources.messages import WRONG_KIND, Call, FormatError, Rejected, Skipped

PARSE_STEP = "parse"


class ChatLogParams(SourceParams):
    path: str
    batch_rows: PositiveInt = 4096


class ChatLogSource(FileSource):
    """A file source of logged calls: JSONL (one item per line), a JSON document (an API listing: its items) or,
    where the format has bulk exports, Parquet (one item per row), any of them compressed (Parquet aside)."""

    Params: ClassVar[type[SourceParams]] = ChatLogParams
    params: ChatLogParams
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl", ".json", ".ndjson")
    listing_keys: ClassVar[tuple[str, ...]] = ()
    """Keys of a JSON document that hold the listed items (`runs`, `data`)."""

    def check(self) -> None:
        plain = tuple(s for s in self.suffixes if s != ".parquet")
        suffixes = with_compression(plain) + ((".parquet",) if ".parquet" in self.suffixes else ())
        self.root, self.files = resolve_files(self.params.path, "source.path", suffixes)  # Parquet: never compressed

    @abstractmethod
    def calls(self, item: Any) -> Iterable[Call | Skipped | Rejected]:
        """The calls one logged item holds. Raises FormatError when the item is not the format."""

    def read_file(self, path: Path, relative: str) -> Iterator[Parsed]:
        """One file (a map shard: history merging needs all of it): its records, then what it held that is no
        record; appends its entry to the inputs."""
        merger = HistoryMerger()
        rejected: list[QuarantineRow] = []
        skipped: dict[str, int] = {}
        for origin, item in self._items(path, relative):
            row_id = row_label(origin)
            if isinstance(item, QuarantineRow):
                rejected.append(item)
                continue
            try:
                found = list(self.calls(item))
            except FormatError as error:
                rejected.append(QuarantineRow(PARSE_STEP, Reason.schema_violation, (str(error),), row_id, origin, item))
                continue
            except WRONG_KIND as error:  # a value of the wrong kind, deep inside
                why = f"not the {self.kind} format ({type(error).__name__}: {error})"
                rejected.append(QuarantineRow(PARSE_STEP, Reason.schema_violation, (why,), row_id, origin, item))
                continue
            numbered = 0
            for index, call in enumerate(found):
                if isinstance(call, Skipped):
                    skipped[call.kind] = skipped.get(call.kind, 0) + 1
                    continue
                if isinstance(call, Rejected):
                    rejected.append(QuarantineRow(
                        PARSE_STEP, Reason.schema_violation, (call.why,), f"{row_id}@{index}", origin, call.item
                    ))
                    continue
                try:
                    numbered = merger.add(call, origin, numbered)
                except (ValueError, RecursionError) as error:  # a bad timestamp, a turn or conversation id too deep
                    rejected.append(
                        QuarantineRow(PARSE_STEP, Reason.schema_violation, (str(error),), row_id, origin, item)
                    )
        for row, origin in merger.rows():
            yield self.to_record(row, origin, row["id"])
        yield from rejected
        if skipped:
            self._inputs[-1]["skipped"] = dict(sorted(skipped.items()))

    def _items(self, path: Path, relative: str) -> Iterator[tuple[Origin, Any]]:
        name = strip_compression(path.name)
        if name.endswith(".parquet"):
            yield from self._parquet_items(path, relative)
            return
        if name.endswith(".json"):
            document = _json_document(read_bytes(path, "source.path"))
            if document is not None:
                items = self._listed(document)
                self._inputs.append({"path": shown_path(path.resolve()), "sha256": file_sha256(path), "rows": len(items)})
                for row, item in enumerate(items):
                    yield Origin(path=relative, row=row), item
                return
        for line, origin in numbered_lines(path, relative, self._inputs):
            yield origin, decode_line(line, origin, row_label(origin))

    def _listed(self, document: Any) -> list[Any]:
        if isinstance(document, list):
            return document
        if isinstance(document, dict):
            for key in self.listing_keys:
                if isinstance(document.get(key), list):
                    return document[key]
        return [document]

    def _parquet_items(self, path: Path, relative: str) -> Iterator[tuple[Origin, Any]]:
        from distill.sources.columnar import import_columnar, json_safe, python_rows, rows_one_by_one

        parquet = import_columnar("pyarrow.parquet", "source.kind")
        try:
            handle = parquet.ParquetFile(path)
        except (OSError, ValueError) as error:
            raise DistillError(f"source.path: {shown_path(path)} is not a readable Parquet file ({error})") from None
        row = 0
        with handle:
            for batch in handle.iter_batches(batch_size=self.params.batch_rows):
                items = python_rows(batch)
                checked = ((item, ()) for item in items) if items is not None else rows_one_by_one(batch)
                for item, problems in checked:
                    origin = Origin(path=relative, row=row)
                    item = json_safe(item)
                    if problems:  # a value Python cannot hold (a timestamp beyond year 9999)
                        item = QuarantineRow(
                            PARSE_STEP, Reason.schema_violation, problems, row_label(origin), origin, item
                        )
                    yield origin, item
                    row += 1
        self._inputs.append({"path": shown_path(path.resolve()), "sha256": file_sha256(path), "rows": row})


def _json_document(data: bytes) -> Any:
    """The file as one JSON document (an API listing, pretty-printed or not), or None when it is JSON Lines."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None

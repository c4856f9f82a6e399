"""Sources read raw rows, map them onto the record model, and yield a `Record` or a quarantine row per row."""

from __future__ import annotations

import math
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from distill.errors import DistillError
from distill.output.files import unwritable
from distill.quarantine import QuarantineRow
from distill.reasons import Reason
from distill.record import RECORD_FIELDS, Origin, Record
from distill.registry import Registry
from distill.sources.fieldmap import FieldMap, FieldSpec
from distill.sources.files import relative_name, resolve_files


class SourceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    fields: dict[str, FieldSpec] = {}
    allow_unmapped: tuple[str, ...] = ()
    """Record fields whose same-named input key may be ignored when the field map reads the field from elsewhere
    and that path is absent (otherwise such a row is a `schema_violation`: see FieldMap)."""

    @field_validator("allow_unmapped")
    @classmethod
    def _record_fields(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(names) - set(RECORD_FIELDS))
        if unknown:
            raise ValueError(f"unknown record field(s) {unknown}")
        return names


Parsed = Record | QuarantineRow


@dataclass(frozen=True)
class Shard:
    """One independently readable piece of a source's input, numbered in the plan's read order: a byte range of a
    plain text file (with the number of its first line, so origins and derived ids stay those of a whole-file read),
    a run of a Parquet file's row groups (with its first row's number, likewise), a whole file, or the whole source
    when the source cannot be cut."""

    index: int
    path: str | None = None
    """The file (absolute); None: the whole source is one shard."""
    relative: str | None = None
    start: int = 0
    stop: int | None = None
    """The byte range [start, stop) of a text file; None: to the end of the file."""
    first_line: int = 1
    size: int = 0
    """Bytes to read, for planning and progress."""
    sha256: str | None = None
    """The whole file's sha256, when the source took it while planning (a Parquet file's)."""
    content_hash: str | None = None
    """The whole file's `file_content_hash`, when the plan took it while cutting the file into byte ranges (its
    sha256 is then taken by the runner, `InputDigests`); None: a shard that is a whole file."""
    row_groups: tuple[int, int] | None = None
    """[first, end) row groups of a Parquet file, whose first row is `first_row`; None: the whole file."""
    fragments: tuple[int, ...] | None = None
    """The fragment ids of a Lance dataset read at `version`, whose first row is `first_row`; None: all of it."""
    first_row: int = 0
    version: int | None = None


def balanced_count(needed: int, workers: int) -> int:
    """How many equal pieces to make of work that needs `needed`: one stays one, more are rounded up to a multiple
    of the workers, so that no worker does the last piece alone while the others wait (the plan's shards and
    partitions)."""
    return needed if needed <= 1 else math.ceil(needed / max(workers, 1)) * max(workers, 1)


class Source(ABC):
    kind: ClassVar[str]
    Params: ClassVar[type[SourceParams]] = SourceParams

    def __init__(self, params: SourceParams) -> None:
        self.params = params
        self.field_map = FieldMap(params.fields, params.allow_unmapped)
        self._inputs: list[dict[str, Any]] = []

    @abstractmethod
    def check(self) -> None:
        """Fails fast (DistillError naming the config key) when the source cannot be read at all."""

    @abstractmethod
    def read(self) -> Iterator[Parsed]:
        """Every input row, in a deterministic order, as a Record or a quarantine row."""

    def size_hint(self) -> int:
        """About how many bytes the input holds, known before it is cut into shards (0: not known that early)."""
        return 0

    def shards(self, target_bytes: int, multiple: int = 1) -> list[Shard]:
        """The input cut into pieces of about `target_bytes` that the plan maps in parallel; a source that cuts a file
        cuts it into a multiple of `multiple` pieces (the workers: equal pieces then keep every worker busy to the
        end). A source that cannot be cut is one shard."""
        return [Shard(0)]

    def read_shard(self, shard: Shard) -> Iterator[Parsed]:
        """Every row of one shard, in order. The default reads the whole source (a one-shard source)."""
        return self.read()

    def shard_inputs(self, shard: Shard) -> list[dict[str, Any]]:
        """After `read_shard`: the manifest's input entries for what it read (summed per file by the plan)."""
        return self.inputs()

    def inputs(self) -> list[dict[str, Any]]:
        """For the manifest, after `read`: what was read ([{path, sha256, rows}] or [{uri, version, rows}]).
        File sources append one entry per file to `self._inputs` as they finish reading it."""
        return list(self._inputs)

    def input_lines(self, inputs: list[dict[str, Any]]) -> int:
        """The manifest's `counts.input_lines` from its `inputs` entries: lines (or columnar rows) read. A line may
        yield several records, so this can be less than `input_rows`."""
        return sum(entry.get("rows") or 0 for entry in inputs)

    def to_record(self, row: Any, origin: Origin, fallback_id: str) -> Parsed:
        """Maps one decoded row onto a Record, or a `schema_violation` quarantine row saying what is wrong."""
        if not isinstance(row, dict):
            return QuarantineRow(
                "parse", Reason.schema_violation, (f"row is a JSON {type(row).__name__}, not an object",),
                fallback_id, origin, row,
            )
        try:
            fields = self.field_map.apply(row)
        except ValueError as error:
            return QuarantineRow("parse", Reason.schema_violation, (str(error),), fallback_id, origin, row)
        if fields.get("id") in (None, ""):
            fields["id"] = fallback_id
        fields["origin"] = origin
        record_id = fields["id"] if isinstance(fields["id"], str) else fallback_id
        for name in _FREE_FORM:
            value = fields.get(name)
            problem = value and unwritable(value)
            if problem:
                return QuarantineRow("parse", Reason.schema_violation, (f"{name}: {problem}",), record_id, origin, row)
        try:
            return Record.model_validate(fields)
        except ValidationError as error:
            return QuarantineRow(
                "parse", Reason.schema_violation, validation_messages(error), record_id, origin, row
            )


# The record fields that hold whatever the logs put there; every other field has a type that bounds it.
_FREE_FORM = ("metadata", "tool_calls", "provenance")


class FileSource(Source):
    """A source of files (`source.path`: a file, a directory searched recursively for `suffixes`, or a glob), read in
    sorted order one file at a time by `read_file`. Each file is one map shard: a format whose records depend on
    earlier lines of the same file (history merging) reads it as one unit."""

    suffixes: ClassVar[tuple[str, ...]]

    def check(self) -> None:
        self.root, self.files = resolve_files(self.params.path, "source.path", self.suffixes)  # type: ignore[attr-defined]

    def size_hint(self) -> int:
        try:
            self.check()
            return sum(path.stat().st_size for path in self.files)
        except (DistillError, OSError):
            return 0  # shards() says what is wrong

    def read(self) -> Iterator[Parsed]:
        self.check()
        self._inputs = []
        for path in self.files:
            yield from self.read_file(path, relative_name(path, self.root))

    @abstractmethod
    def read_file(self, path: Path, relative: str) -> Iterator[Parsed]:
        """One file's rows, in order (`relative`: its path from the source root, for origins and ids); appends the
        file's manifest entry to `self._inputs` once read."""

    def shards(self, target_bytes: int, multiple: int = 1) -> list[Shard]:
        self.check()
        return [
            Shard(index, str(path), relative_name(path, self.root), size=path.stat().st_size)
            for index, path in enumerate(self.files)
        ]

    def read_shard(self, shard: Shard) -> Iterator[Parsed]:
        if shard.path is None:
            yield from self.read()
            return
        if not hasattr(self, "files"):  # a worker builds its own source from the config: check it once there
            self.check()
        self._inputs = []
        yield from self.read_file(Path(shard.path), shard.relative or Path(shard.path).name)


def validation_messages(error: ValidationError) -> tuple[str, ...]:
    return tuple(
        f"{'.'.join(str(part) for part in item['loc']) or '(row)'}: {item['msg']}"
        + (f" (got {_shown(item['input']):.80})" if "input" in item and not isinstance(item["input"], dict) else "")
        for item in error.errors()
    )


def _shown(value: Any) -> str:
    """`repr(value)`, or an abbreviated one when the value is nested too deep for repr (a list 1,000 levels deep)."""
    try:
        return repr(value)
    except RecursionError:
        return reprlib.repr(value)


SOURCES: Registry[type[Source]] = Registry("source")

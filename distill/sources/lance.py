from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, PositiveInt

from distill.errors import DistillError
from distill.record import Origin
from distill.sources.base import SOURCES, Parsed, Shard, Source, SourceParams
from distill.sources.columnar import consecutive_runs, import_columnar, parse_batches


class LanceParams(SourceParams):
    uri: str = Field(min_length=1)
    version: PositiveInt | None = None
    """The dataset version to read (time travel); None reads the latest, and the manifest names its number."""
    batch_rows: PositiveInt = 4096


def _is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


@SOURCES.register("lance")
class LanceSource(Source):
    """A Lance dataset (pylance), read at one version: `source.version=N`, or the latest when unset.

    The version actually read is resolved to its number before any row is read, so the manifest's
    `inputs: [{uri, version, rows}]` reproduces the run exactly even after the store has moved on. Rows are read
    in storage order, numbered from 0: `origin = {uri: <dataset name>, version, row}`, and a row without an id is
    `<dataset name>#<row>`, the same on every machine.
    """

    kind = "lance"
    Params = LanceParams
    params: LanceParams

    def __init__(self, params: LanceParams) -> None:
        super().__init__(params)
        self._rows: int | None = None

    def check(self) -> None:
        lance = import_columnar("lance", "source.kind")
        uri = self.params.uri
        if _is_local(uri) and not Path(uri.removeprefix("file://")).expanduser().exists():
            raise DistillError(f"source.uri: no Lance dataset at {uri}")
        try:
            latest = lance.dataset(uri)
        except (ValueError, OSError) as error:
            raise DistillError(f"source.uri: cannot open a Lance dataset at {uri} ({_first_line(error)})") from None
        if self.params.version is None:
            self.dataset = latest
        else:
            known = sorted(entry["version"] for entry in latest.versions())
            if self.params.version not in known:
                raise DistillError(
                    f"source.version: {uri} has no version {self.params.version} (versions: {_ranges(known)})"
                )
            self.dataset = latest.checkout_version(self.params.version)
        self.version: int = self.dataset.version
        self.name = Path(urlparse(uri).path.rstrip("/")).name or uri

    def read(self) -> Iterator[Parsed]:
        self.check()
        self._rows = 0
        batches = self.dataset.to_batches(batch_size=self.params.batch_rows, scan_in_order=True)
        for parsed in parse_batches(
            self, batches, lambda row: Origin(uri=self.name, version=self.version, row=row), self._fallback_id
        ):
            self._rows += 1
            yield parsed

    def shards(self, target_bytes: int, multiple: int = 1) -> list[Shard]:
        """The dataset's fragments, in storage order, gathered into runs of about `target_bytes`, each knowing its
        first row's number (so origins and `<dataset>#<row>` ids are those of a whole read) and the version the
        plan resolved, which every worker reads even if the store moved on meanwhile."""
        self.check()
        fragments = [(fragment.fragment_id, fragment.count_rows()) for fragment in self.dataset.get_fragments()]
        if not fragments:
            return [Shard(0, version=self.version)]
        row_bytes = self._bytes_per_row(sum(rows for _, rows in fragments))
        runs = consecutive_runs([(rows, rows * row_bytes) for _, rows in fragments], target_bytes)
        return [
            Shard(
                index, size=size, fragments=tuple(fragment_id for fragment_id, _ in fragments[first:end]),
                first_row=first_row, version=self.version,
            )
            for index, (first, end, first_row, size) in enumerate(runs)
        ]

    def _bytes_per_row(self, rows: int) -> float:
        """The dataset's bytes on disk per row (a local store), for sizing shards; a remote store counts 1 KiB."""
        if not _is_local(self.params.uri) or not rows:
            return 1024.0
        root = Path(self.params.uri.removeprefix("file://")).expanduser() / "data"
        on_disk = sum(path.stat().st_size for path in root.glob("*.lance")) if root.is_dir() else 0
        return max(on_disk / rows, 1.0)

    def read_shard(self, shard: Shard) -> Iterator[Parsed]:
        if shard.fragments is None:
            yield from self.read()
            return
        # Pinned to the version the plan resolved, whatever the store's latest is by now.
        self.params = self.params.model_copy(update={"version": shard.version})
        self.check()
        self._rows = 0
        batches = (
            batch
            for fragment_id in shard.fragments
            for batch in self.dataset.get_fragment(fragment_id).to_batches(batch_size=self.params.batch_rows)
        )
        for parsed in parse_batches(
            self, batches, lambda row: Origin(uri=self.name, version=self.version, row=row), self._fallback_id,
            shard.first_row,
        ):
            self._rows += 1
            yield parsed

    def _fallback_id(self, row: int) -> str:
        return f"{self.name}#{row}"

    def inputs(self) -> list[dict[str, Any]]:
        uri = self.params.uri
        shown = str(Path(uri.removeprefix("file://")).expanduser().resolve()) if _is_local(uri) else uri
        return [{"uri": shown, "version": self.version, "rows": self._rows}]


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def _ranges(versions: list[int]) -> str:
    if not versions:
        return "none"
    return f"{versions[0]}..{versions[-1]}" if versions == list(range(versions[0], versions[-1] + 1)) else str(versions)

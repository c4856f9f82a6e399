from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, PositiveInt

from distill.errors import DistillError
from distill.record import Origin
from distill.sources.base import SOURCES, Parsed, Source, SourceParams
from distill.sources.columnar import import_columnar, parse_batches


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

"""Sources. Importing this package registers every source kind in `SOURCES`."""

from distill.sources import jsonl, lakehouse, lance, parquet  # noqa: F401
from distill.sources.base import SOURCES, Parsed, Source, SourceParams

__all__ = ["SOURCES", "Parsed", "Source", "SourceParams"]

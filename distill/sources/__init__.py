"""Sources. Importing this package registers every source kind in `SOURCES`."""

from distill.sources import (  # noqa: F401
    anthropic_messages,
    jsonl,
    lakehouse,
    lance,
    langfuse,
    langsmith,
    openai_chat,
    otel_genai,
    parquet,
    sharegpt,
)
from distill.sources.base import SOURCES, Parsed, Source, SourceParams

__all__ = ["SOURCES", "Parsed", "Source", "SourceParams"]

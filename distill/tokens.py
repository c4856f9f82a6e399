"""Token counts: a real tokenizer when one is configured, else the log's own count, else a length proxy."""

from __future__ import annotations

import math
from collections.abc import Callable

from distill.errors import ConfigError
from distill.record import Record

CHARS_PER_TOKEN = 4  # the usual rough ratio for English text with BPE tokenizers

TokenCounter = Callable[[str], int]


def load_tokenizer(path: str) -> TokenCounter:
    """A token counter from a HuggingFace `tokenizer.json` (the `tokenizers` package, extra `tokenizer`)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(["stats.tokenizer: needs the tokenizers package: pip install 'distill[tokenizer]'"]) from None
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as error:  # tokenizers raises a bare Exception for a missing or malformed file
        raise ConfigError([f"stats.tokenizer: cannot load {path}: {error}"]) from None
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def token_length(record: Record, tokenizer: TokenCounter | None = None) -> tuple[int, str]:
    """(tokens, method): a configured tokenizer counts every record (the lengths the trained model will see);
    else `tokens_used` when the log has it, else the character-length proxy."""
    if tokenizer is not None:
        return tokenizer(record.text or ""), "tokenizer"
    if record.tokens_used is not None:
        return record.tokens_used, "tokens_used"
    return math.ceil(len(record.text or "") / CHARS_PER_TOKEN), "length_proxy"

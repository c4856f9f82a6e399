"""Text normalisation shared by near-duplicate detection and decontamination.

Both compare *words*, so both see text the same way: Unicode compatibility-decomposed, diacritics stripped,
case-folded, punctuation and symbols turned into word breaks, whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import cast

import numpy as np

from distill.hashing import normalize_text

# Combining marks left behind by NFKD decomposition (the common blocks; `re` has no Unicode category classes).
_COMBINING_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
_NON_WORD = re.compile(r"[\W_]+")


# ASCII fast path (most logged text): one bytes.translate pass lowercases and turns every non-alphanumeric byte into
# a space, ~20x faster than the regex; the result is the same as the general path's.
_ASCII_TABLE = bytes(
    (byte | 0x20) if chr(byte).isalpha() else byte if chr(byte).isdigit() else 0x20 for byte in range(128)
) + b" " * 128


def normalize_words_bytes(text: str) -> bytes:
    """The same words as `normalize_words`, as UTF-8 bytes separated by one *or more* spaces (what the vectorised
    hashing consumes: collapsing the spaces in Python would cost more than all the hashing)."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE)
    decomposed = unicodedata.normalize("NFKD", text)
    if not decomposed.isascii():
        decomposed = _COMBINING_MARKS.sub("", decomposed)
    return _NON_WORD.sub(" ", decomposed.casefold()).encode("utf-8")


def normalize_words(text: str) -> str:
    """The text as lowercase words without diacritics or punctuation, joined by single spaces."""
    return " ".join(normalize_words_bytes(text).decode("utf-8").split())


def words(text: str) -> list[str]:
    normalized = normalize_words(text)
    return normalized.split(" ") if normalized else []


# Exact-duplicate form (the words of `distill.hashing.normalize_text`: NFKC, case-folded, split on whitespace),
# with punctuation kept. For ASCII, NFKC changes nothing and case-folding is lowercasing: one translate pass.
_ASCII_WHITESPACE = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "
_EXACT_ASCII_TABLE = bytes(
    0x20 if byte in _ASCII_WHITESPACE else (byte | 0x20) if chr(byte).isupper() else byte for byte in range(256)
)


def exact_forms(texts: Sequence[str]) -> list[bytes]:
    """`normalize_text(text)` as UTF-8 bytes (words joined by single spaces) for each text, faster for ASCII text:
    compiled (`_exact_forms`, where distill was built with a C compiler), else `ascii_exact_forms_in_python`; a text
    that is not ASCII goes through `normalize_text`."""
    forms = ascii_exact_forms(texts if type(texts) is list else list(texts))
    return [form if form is not None else normalize_text(text).encode("utf-8") for form, text in zip(forms, texts)]


def ascii_exact_forms_in_python(texts: Sequence[str]) -> list[bytes | None]:
    """Each ASCII text's exact form, None for the others: one translate pass, which is already canonical unless the
    text has a run of whitespace or whitespace at either end; only those are split and joined again. Looking for
    them one text at a time (`b"  " in form`) cost more than everything else here: numpy looks for them in many
    texts at once."""
    forms: list[bytes | None] = [
        text.encode("ascii").translate(_EXACT_ASCII_TABLE) if text.isascii() else None for text in texts
    ]
    plain = [i for i, form in enumerate(forms) if form is not None]
    start = 0
    while start < len(plain):
        # Runs of texts of about SPACED_RUN_BYTES: the joined text and numpy's arrays then stay below glibc's mmap
        # threshold (128 KiB) and in the CPU's cache. Over a whole batch (megabytes of text) each array was a fresh
        # mapping whose page faults cost more than the search (bench/RESULTS.md).
        end, size = start, 0
        while end < len(plain) and size < SPACED_RUN_BYTES:
            size += len(cast(bytes, forms[plain[end]]))
            end += 1
        run = plain[start:end]
        for i in _spaced(cast(list[bytes], [forms[i] for i in run])):
            forms[run[i]] = b" ".join(cast(bytes, forms[run[i]]).split())
        start = end
    return forms


try:
    from distill.curation._exact_forms import ascii_exact_forms
except ImportError:  # built without a C compiler: the same forms, in Python
    ascii_exact_forms = ascii_exact_forms_in_python


SPACED_RUN_BYTES = 64 * 1024


def _spaced(forms: list[bytes]) -> set[int]:
    """The forms that may hold two spaces in a row or a space at either end: every such form, and perhaps a
    neighbour (rewriting a canonical form changes nothing). The forms are joined by one space and the whole is
    framed by one more at each end, so a space at a form's end shows up as two in a row beside its separator."""
    if not forms:
        return set()
    joined = np.frombuffer(b" ".join([b"", *forms, b""]), dtype=np.uint8)
    space = joined == 0x20
    twice = np.flatnonzero(space[1:] & space[:-1])
    if not len(twice):
        return set()
    starts = np.cumsum([1] + [len(form) + 1 for form in forms[:-1]])
    # A pair (p, p + 1) touches the form holding p (a separator counts with the form before it, the first frame
    # space with the first form) and the one holding p + 1.
    touched = np.concatenate([np.searchsorted(starts, twice, "right"), np.searchsorted(starts, twice + 1, "right")])
    return set(np.clip(touched - 1, 0, len(forms) - 1).tolist())

"""A `.json` file holding one JSON document (an array of records, or one record) rather than JSON Lines.

An array is streamed: its elements are cut out of the byte stream one at a time (strings and nesting tracked, so a
`,` or `]` inside a text never splits a record), and each is parsed on its own. Memory is one element plus one read
chunk, however large the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO, Literal

import orjson

BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20
HEAD_BYTES = 1 << 16
_STRUCTURAL = re.compile(rb'[\[\]{},"]')
_IN_STRING = re.compile(rb'["\\]')
_WHITESPACE = b" \t\r\n"

Shape = Literal["lines", "array", "object"]


def document_shape(handle: BinaryIO) -> Shape:
    """How a `.json` file holds its records, from its start: `array` (`[...]`), `object` (one record spread over
    lines) or `lines` (JSON Lines under a .json name: the first line is a whole JSON value). Rewinds the handle."""
    try:
        first = handle.readline(HEAD_BYTES)
        if first.startswith(BOM):
            first = first[len(BOM):]
        while first and not first.strip(_WHITESPACE):
            first = handle.readline(HEAD_BYTES)
        head = first.lstrip(_WHITESPACE)[:1]
        if head == b"[":
            return "array"
        if head != b"{" or (len(first) >= HEAD_BYTES and not first.endswith(b"\n")):
            return "lines"  # a line too long to be a pretty-printed object's first: one record per line
        try:
            orjson.loads(first)
            return "lines"
        except orjson.JSONDecodeError:
            return "object"
    finally:
        handle.seek(0)


def array_elements(handle: BinaryIO, after: bytearray | None = None) -> Iterator[bytes]:
    """The raw bytes of each element of the top-level JSON array the handle holds, in order (leading BOM and
    whitespace skipped). A truncated or malformed document yields what it has, for the caller's parse to refuse.
    With `after`, the rest of the stream is read once the array closes, and what follows it (whitespace aside, its
    first AFTER_KEPT bytes) is added to `after`: a second array or trailing text is no row, but must not go unseen."""
    depth = 0  # 0: before the array; 1: between its elements
    in_string = escaped = done = False
    element = bytearray()
    chunk = handle.read(CHUNK_BYTES)
    if chunk.startswith(BOM):
        chunk = chunk[len(BOM):]
    while chunk and not done:
        position, start, size = 0, 0, len(chunk)
        while position < size:
            if escaped:
                position, escaped = position + 1, False
                continue
            if in_string:
                match = _IN_STRING.search(chunk, position)
                if match is None:
                    position = size
                    break
                position = match.end()
                if chunk[match.start()] == 0x5C:  # a backslash escapes the next byte, maybe in the next chunk
                    escaped = True
                else:
                    in_string = False
                continue
            match = _STRUCTURAL.search(chunk, position)
            if match is None:
                position = size
                break
            symbol, position = chunk[match.start()], match.end()
            if symbol == 0x22:  # "
                in_string = True
            elif symbol in (0x5B, 0x7B):  # [ {
                depth += 1
                if depth == 1:
                    start = position  # the array opens: elements start after it
            elif symbol in (0x5D, 0x7D):  # ] }
                depth -= 1
                if depth == 0:
                    element += chunk[start : match.start()]
                    done = True
                    if after is not None:
                        _keep_after(chunk[position:], handle, after)
                    break
            elif depth == 1:  # a comma between elements
                element += chunk[start : match.start()]
                yield bytes(element)
                element.clear()
                start = position
        if depth >= 1 and not done:
            element += chunk[start:position]
        if not done:
            chunk = handle.read(CHUNK_BYTES)
    if element.strip(_WHITESPACE):
        yield bytes(element)


AFTER_KEPT = 1 << 16


def _keep_after(rest: bytes, handle: BinaryIO, after: bytearray) -> None:
    while rest:
        if not after:
            rest = rest.lstrip(_WHITESPACE)
        after += rest[: AFTER_KEPT - len(after)]
        rest = handle.read(CHUNK_BYTES)

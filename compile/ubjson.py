"""A small UBJSON decoder (draft 12, what XGBoost writes), for reading model files in Python.

XGBoost's own reader answers a damaged file with a C++ check failure and a stack trace; this
one raises ``UBJSONError`` with the byte offset, and ``truncated`` set when the data simply
ends too early, so that compile/model_file.py can say which it is in one line.

Typed arrays (``[$d#L n`` ...) are decoded with numpy in one step, as lists.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

__all__ = ["UBJSONError", "decode"]

# Fixed-size values: marker -> struct format (big-endian, as UBJSON specifies).
_NUMBERS = {
    b"i": ">b",
    b"U": ">B",
    b"I": ">h",
    b"l": ">i",
    b"L": ">q",
    b"d": ">f",
    b"D": ">d",
}
_CONSTANTS: dict[bytes, Any] = {b"Z": None, b"T": True, b"F": False}
_MAX_DEPTH = 64  # a model nests 6 levels deep; anything far deeper is not a model


class UBJSONError(ValueError):
    def __init__(self, message: str, offset: int, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.truncated = truncated


def decode(data: bytes) -> Any:
    """The one value ``data`` holds; trailing bytes other than whitespace are an error."""
    reader = _Reader(data)
    value = reader.value(0)
    if data[reader.at :].strip():
        raise UBJSONError("unexpected bytes after the end of the model", reader.at)
    return value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, count: int) -> bytes:
        end = self.at + count
        if count < 0 or end > len(self.data):
            raise UBJSONError("the data ends early", len(self.data), truncated=True)
        chunk, self.at = self.data[self.at : end], end
        return chunk

    def marker(self) -> bytes:
        while True:
            byte = self.take(1)
            if byte != b"N":  # no-op
                return byte

    def value(self, depth: int, marker: bytes | None = None) -> Any:
        start = self.at
        marker = marker or self.marker()
        if marker in _NUMBERS:
            fmt = _NUMBERS[marker]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if marker in _CONSTANTS:
            return _CONSTANTS[marker]
        if marker == b"C":
            return self.take(1).decode("latin-1")
        if marker in (b"S", b"H"):
            return self.text()
        if depth >= _MAX_DEPTH:
            raise UBJSONError("nested too deeply", start)
        if marker == b"[":
            return self.array(depth + 1)
        if marker == b"{":
            return self.object(depth + 1)
        raise UBJSONError(f"unknown type marker {marker!r}", start)

    def length(self) -> int:
        start = self.at
        marker = self.marker()
        if marker not in _NUMBERS or marker in (b"d", b"D"):
            raise UBJSONError(f"a length must be an integer, found marker {marker!r}", start)
        count = int(self.value(0, marker))
        if count < 0:
            raise UBJSONError(f"negative length {count}", start)
        return count

    def text(self) -> str:
        start = self.at
        raw = self.take(self.length())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UBJSONError("a string is not UTF-8", start) from None

    def container_header(self) -> tuple[bytes | None, int | None]:
        """The optional ``$type`` and ``#count`` after '[' or '{'."""
        kind = count = None
        if self.data[self.at : self.at + 1] == b"$":
            self.at += 1
            kind = self.take(1)
            if self.data[self.at : self.at + 1] != b"#":
                raise UBJSONError("a typed container needs a count", self.at)
        if self.data[self.at : self.at + 1] == b"#":
            self.at += 1
            count = self.length()
        return kind, count

    def array(self, depth: int) -> list[Any]:
        kind, count = self.container_header()
        if kind in _NUMBERS and count is not None:
            dtype = np.dtype(_NUMBERS[kind])
            raw = self.take(count * dtype.itemsize)
            values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
            return values
        if count is not None:
            return [self.value(depth, kind) for _ in range(count)]
        items = []
        while (marker := self.marker()) != b"]":
            items.append(self.value(depth, marker))
        return items

    def object(self, depth: int) -> dict[str, Any]:
        kind, count = self.container_header()
        doc: dict[str, Any] = {}
        read = 0
        while True:
            if count is not None:
                if read == count:
                    return doc
            elif self.data[self.at : self.at + 1] == b"}":
                self.at += 1
                return doc
            key = self.text()
            doc[key] = self.value(depth, kind)
            read += 1

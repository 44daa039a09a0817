"""JSON decoding for untrusted requests: strict, bounded, and with stable error codes.

Python's json module accepts ``NaN``/``Infinity`` tokens and turns ``1e999`` into inf; neither
is JSON, and a model must never see a value the sender did not mean. Deep nesting is refused
before it can exhaust the interpreter's stack.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .exceptions import RequestError

__all__ = ["MAX_DEPTH", "loads"]

MAX_DEPTH = 32


def _reject_constant(token: str) -> Any:
    raise RequestError("bad_json", f"{token} is not valid JSON; send null for a missing value")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise RequestError("bad_json", f"number {text[:40]} is out of range")
    return value


def loads(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode UTF-8 JSON text, raising RequestError with code bad_encoding or bad_json."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError("bad_encoding", f"payload is not UTF-8: {exc}") from None
    else:
        text = data
    _check_depth(text, max_depth)
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        raise RequestError("bad_json", f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError("bad_json", "payload is nested too deeply") from None


def _check_depth(text: str, max_depth: int) -> None:
    """Refuse nesting deeper than max_depth, counting brackets outside strings."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper; the common case costs two counts
    depth = 0
    for bracket in _NOT_BRACKETS.sub("", _STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > max_depth:
            raise RequestError("bad_json", f"payload is nested deeper than {max_depth} levels")


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")

"""JSON decoding for untrusted requests: strict, in time linear in the input, stable error codes.

Python's json module accepts ``NaN``/``Infinity`` tokens, turns ``1e999`` into inf, keeps the
last of duplicate keys and raises ValueError for integers of more than 4,300 digits; none of
that may reach a model. Everything here runs in C or in regular expressions that cannot
backtrack (no alternation inside a repetition), so any payload up to the size limit is decoded
or refused in linear time:

1. the nesting depth is measured on the text before parsing (escapes removed, then strings,
   then the brackets counted), so a deep document never reaches the parser's recursion;
2. the C parser decodes, with hooks that refuse non-JSON constants, long numbers, numbers out
   of float range and duplicate keys.

A document that is already decoded (a Greengrass jsonMessage) goes through :func:`check`,
which re-encodes it once in C and applies the same size and depth limits to that text.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate

from .exceptions import RequestError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_DEPTH", "MAX_NUMBER_LENGTH", "check", "loads"]

MAX_DEPTH = 32
# Characters in one number token. float32 needs 9 significant digits; 100 leaves room for
# any sane formatting and refuses the 4,301-digit integers that make int() raise.
MAX_NUMBER_LENGTH = 100

_ESCAPE = re.compile(r"\\.", re.DOTALL)  # one backslash and the character it escapes
_STRING = re.compile(r'"[^"]*"')  # after escapes are gone, a quote always ends a string
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


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
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise RequestError("bad_json", f"payload is not valid JSON: {exc}") from None
    except RecursionError:  # unreachable after _check_depth; kept as a last line of defence
        raise RequestError("bad_json", "payload is nested too deeply") from None


def check(document: Any, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> int:
    """Apply the limits of :func:`loads` to an already decoded document; return its size as
    compact JSON. Raises RequestError: too_large, or bad_json for NaN/inf or deep nesting."""
    try:
        text = json.dumps(document, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError as exc:  # NaN or inf: they came from tokens that are not JSON
        raise RequestError("bad_json", f"{exc}; send null for a missing value") from None
    except RecursionError:
        raise RequestError(
            "bad_json", f"message is nested deeper than {max_depth} levels"
        ) from None
    except TypeError as exc:  # not from a JSON decoder at all
        raise RequestError("bad_json", f"message is not JSON data: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise RequestError(
            "too_large", f"message is {size} bytes as JSON; the limit is {max_bytes}"
        )
    _check_depth(text, max_depth)
    return size


def _check_depth(text: str, max_depth: int) -> None:
    """Refuse nesting deeper than max_depth, counting brackets outside strings."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper; the common small case costs two counts
    outside_strings = _STRING.sub("", _ESCAPE.sub("", text))
    # A quote left over opens a string that never ends: what follows it is not structure, and
    # the parser will say where the string starts.
    brackets = _NOT_BRACKET.sub("", outside_strings.partition('"')[0])
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > max_depth:
        raise RequestError("bad_json", f"payload is nested deeper than {max_depth} levels")


def _reject_constant(token: str) -> Any:
    raise RequestError("bad_json", f"{token} is not valid JSON; send null for a missing value")


def _check_number_length(text: str) -> None:
    if len(text) > MAX_NUMBER_LENGTH:
        raise RequestError(
            "bad_json",
            f"a number of {len(text)} characters ({text[:20]}...) is longer than "
            f"{MAX_NUMBER_LENGTH}",
        )


def _parse_float(text: str) -> float:
    _check_number_length(text)
    value = float(text)
    if math.isinf(value):
        raise RequestError("bad_json", f"number {text[:40]} is out of range")
    return value


def _parse_int(text: str) -> int:
    _check_number_length(text)
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):  # rare: find which key, for the message
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RequestError("bad_json", f"key {key[:64]!r} appears twice in one object")
            seen.add(key)
    return document


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys,
    parse_constant=_reject_constant,
    parse_float=_parse_float,
    parse_int=_parse_int,
)

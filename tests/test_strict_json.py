"""Decoding untrusted JSON: the same answer as json for valid documents, a bad_json error with
the reason for everything else, and time linear in the size for any content."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeboost.runtime import strict_json
from edgeboost.runtime.exceptions import RequestError
from edgeboost.runtime.protocol import Limits, decode_request, peek_id

LIMIT = Limits().max_payload_bytes  # 256 KiB, the serving default

# JSON values as the grammar allows them: finite numbers, any text, nesting.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@given(documents)
@settings(max_examples=400, deadline=None)
def test_valid_documents_decode_like_json(document: Any) -> None:
    text = json.dumps(document)
    if depth(document) > strict_json.MAX_DEPTH:
        with pytest.raises(RequestError, match="nested deeper"):
            strict_json.loads(text)
    else:
        assert strict_json.loads(text) == json.loads(text)
        assert strict_json.loads(text.encode()) == json.loads(text)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@settings(max_examples=1000, deadline=None)
def test_any_bytes_decode_or_fail_with_a_request_error(data: bytes) -> None:
    try:
        strict_json.loads(data)
    except RequestError as exc:
        assert exc.code in ("bad_json", "bad_encoding")
        assert exc.message


@given(documents, st.integers(min_value=0, max_value=200))
@settings(max_examples=300, deadline=None)
def test_truncated_documents_are_refused_or_valid(document: Any, cut: int) -> None:
    text = json.dumps(document)
    prefix = text[: max(0, len(text) - cut)]
    try:
        json.loads(prefix)
    except ValueError:
        with pytest.raises(RequestError):
            strict_json.loads(prefix)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"id": 1, "id": 2}', "'id' appears twice"),
        (b'[{"alcohol": 1, "alcohol": 2}]', "'alcohol' appears twice"),
        (b"[NaN]", "NaN is not valid JSON"),
        (b"[-Infinity]", "-Infinity is not valid JSON"),
        (b"[1e400]", "out of range"),
        (b"[" + b"9" * 4301 + b"]", "4301 characters"),
        (b"[0." + b"1" * 200 + b"]", "202 characters"),
        (b"[" * 33 + b"]" * 33, "nested deeper than 32"),
        (b'{"a":' * 33 + b"1" + b"}" * 33, "nested deeper than 32"),
        (b'["unclosed', "Unterminated string"),
        (b'"\xff"', "not UTF-8"),
    ],
)
def test_refusals_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(RequestError, match=reason.replace("[", r"\[")) as caught:
        strict_json.loads(payload)
    assert caught.value.code in ("bad_json", "bad_encoding")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"k": "[" * 1000 + '\\"{' * 100, "n": [[["\\"]]]})
    assert strict_json.loads(text) == json.loads(text)


def test_a_decoded_document_gets_the_same_limits() -> None:
    assert strict_json.check({"id": 1, "v": [1.5]}, max_bytes=100) == len('{"id":1,"v":[1.5]}')
    for document, code in [
        ({"v": [math.nan]}, "bad_json"),
        ({"v": [math.inf]}, "bad_json"),
        ({"v": "x" * 200}, "too_large"),
        ({"v": [[[[[[1]]]]]]}, "bad_json"),
        ({"v": object()}, "bad_json"),
    ]:
        with pytest.raises(RequestError) as caught:
            strict_json.check(document, max_bytes=150, max_depth=4)
        assert caught.value.code == code


# --- adversarial shapes at the size limit -------------------------------------------------------
def unclosed_escapes(size: int) -> bytes:
    # The payload that froze the server for 345 s: quadratic backtracking of a string regex.
    head = b"[" * 33 + b'"'
    return head + b'\\"' * ((size - len(head)) // 2)


def closed_escapes(size: int) -> bytes:
    return b'["' + b'\\"' * ((size - 4) // 2) + b'"]'


def deep_nesting(size: int) -> bytes:
    return b"[" * (size // 2) + b"]" * (size // 2)


def long_number(size: int) -> bytes:
    return b"[" + b"7" * (size - 2) + b"]"


def many_duplicate_keys(size: int) -> bytes:
    return b"{" + b'"k":1,' * (size // 6 - 1) + b'"k":1}'


def many_short_strings(size: int) -> bytes:
    return b"[" + b'"\\u0041\\n",' * (size // 11 - 1) + b'"x"]'


def unclosed_string_of_brackets(size: int) -> bytes:
    return b'{"a": "' + b"[{" * ((size - 7) // 2)


def rows(size: int) -> bytes:
    row = b'{"temp": 0.5, "humidity": -1.0, "pressure": 2.0, "wind speed": 0.25},'
    head = b'{"id": 1, "instances": ['
    return head + row * ((size - len(head) - 2) // len(row) - 1) + row[:-1] + b"]}"


SHAPES: dict[str, Callable[[int], bytes]] = {
    f.__name__: f
    for f in (
        unclosed_escapes,
        closed_escapes,
        deep_nesting,
        long_number,
        many_duplicate_keys,
        many_short_strings,
        unclosed_string_of_brackets,
        rows,
    )
}


def decode_seconds(payload: bytes) -> float:
    """Best of 5: the time decode_request needs for one payload (answer or refusal)."""
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        with contextlib.suppress(RequestError):
            decode_request(payload, limits=Limits(), legacy_topic=False)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_decode_time_grows_linearly(shape: str) -> None:
    small, large = SHAPES[shape](16 * 1024), SHAPES[shape](LIMIT)
    assert len(large) <= LIMIT
    small_s, large_s = decode_seconds(small), decode_seconds(large)
    # 16x the bytes; linear is ~16x, quadratic ~256x. 32 leaves room for a noisy machine,
    # and anything under 5 ms at the limit is fast whatever the ratio.
    assert large_s / max(small_s, 1e-6) <= 32 or large_s < 0.005, (small_s, large_s)
    assert large_s < 1.0, large_s


def test_the_issue_payload_is_refused_at_once() -> None:
    with pytest.raises(RequestError, match="nested deeper than 32") as caught:
        decode_request(unclosed_escapes(LIMIT), limits=Limits(), legacy_topic=False)
    assert caught.value.code == "bad_json"
    with pytest.raises(RequestError, match="Unterminated string"):
        strict_json.loads(unclosed_escapes(LIMIT)[1:])  # 32 levels: the parser's turn


def test_brackets_after_an_unclosed_quote_are_not_structure() -> None:
    with pytest.raises(RequestError, match="Unterminated string starting at: line 1 column 7"):
        strict_json.loads(unclosed_string_of_brackets(LIMIT))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"id": "r-17", "instances": []}', "r-17"),
        (b' { "id" : 42 , "instances": [', 42),
        (b'{"id": "caf\\u00e9", "x": 1}', "caf\u00e9"),
        (b'{"instances": [], "id": "late"}', None),  # not first: not worth a full decode
        (b'{"id": "' + b"x" * 300 + b'"}', None),  # longer than any valid id
        (b'{"id": true}', None),
        (b"garbage", None),
    ],
)
def test_peek_id_reads_a_leading_id_without_decoding(payload: bytes, expected: Any) -> None:
    padded = payload + b" " * 2000  # larger than what is decoded in full
    assert peek_id(padded) == expected


def test_peek_id_decodes_small_payloads_in_full() -> None:
    assert peek_id(b'{"instances": [], "id": "late"}', decode_up_to=1024) == "late"
    assert peek_id({"id": 7.0}) == 7
    assert peek_id({"id": float(2**60)}) is None

"""The request/reply protocol served over Greengrass IPC pub/sub (pure functions, no I/O).

Request (JSON object, on the request topic)::

    {"id": "r-1", "instances": [{"alcohol": 11.4, ...}] | [[7.4, 0.7, ...]],
     "margin": false, "reply_to": "optional/topic"}

Reply (on ``reply_to``, else the response topic)::

    {"id": "r-1", "predictions": [5.61], "model": {"name": ..., "sha256": ...},
     "latency_ms": 0.21}

Error reply::

    {"id": "r-1" | null, "error": {"code": "bad_features", "message": "..."}, "model": {...}}

Legacy requests (the old Lambda event ``{"body": "<JSON records>", "isBase64Encoded": false}``,
usually on ``local/inference``) get the old reply: a bare JSON list of predictions on the
legacy response topic, or ``{"code", "message"}`` when the input is bad.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from . import strict_json
from .exceptions import FeatureNameError, InputError, RequestError
from .records import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ERROR_CODES",
    "Limits",
    "Request",
    "decode_event",
    "decode_request",
    "encode_error",
    "encode_legacy_error",
    "encode_legacy_reply",
    "encode_reply",
    "error_for",
    "peek_id",
]

# Stable, documented error codes (README "Serving").
ERROR_CODES = {
    "bad_encoding": "the payload is not UTF-8",
    "bad_json": "the payload is not valid JSON (NaN/Infinity tokens, duplicate keys, numbers "
    "too long or out of range, and deep nesting included)",
    "bad_request": "the request is not an object with the documented fields",
    "bad_instances": "instances are not rows of numbers of the model's width",
    "bad_features": "named features are missing or unknown",
    "too_large": "the payload or the number of rows exceeds the configured limit",
    "forbidden_reply_topic": "reply_to is outside the allowed reply topics",
    "overloaded": "the work queue is full; retry later",
    "internal": "the server failed unexpectedly; the request was not answered otherwise",
}
_MAX_ID_LENGTH = 256


@record
class Limits:
    max_payload_bytes: int = 256 * 1024
    max_rows: int = 1000
    # A reply's payload. A binaryMessage travels base64-encoded in a frame: the Java Nucleus
    # takes 16 MiB frames (12 MiB of payload); nucleus lite 10,000 bytes (7,000 of payload).
    max_reply_bytes: int = 12 * 1024 * 1024


class Request:
    """One decoded request (per message: a plain __slots__ class, see records.py)."""

    __slots__ = ("id", "instances", "legacy", "margin", "reply_to")

    def __init__(
        self,
        id: str | int | None,
        instances: list[Any],
        margin: bool,
        reply_to: str | None,
        legacy: bool,
    ) -> None:
        self.id, self.instances, self.margin = id, instances, margin
        self.reply_to, self.legacy = reply_to, legacy


def decode_request(payload: bytes | Any, *, limits: Limits, legacy_topic: bool) -> Request:
    """Decode one message. ``payload`` is the raw bytes of a binaryMessage, or the object of a
    jsonMessage (already decoded by the IPC client). Raises RequestError."""
    if isinstance(payload, (bytes, bytearray)):
        if len(payload) > limits.max_payload_bytes:
            raise RequestError(
                "too_large",
                f"payload is {len(payload)} bytes; the limit is {limits.max_payload_bytes}",
                request_id=peek_id(payload),
            )
        document = strict_json.loads(payload)
    else:
        try:
            strict_json.check(payload, max_bytes=limits.max_payload_bytes)
        except RequestError as exc:
            exc.request_id = peek_id(payload)
            raise
        document = payload
    if isinstance(document, dict) and "body" in document and "instances" not in document:
        return _legacy(document, limits)
    if legacy_topic and isinstance(document, list):
        return _legacy({"body": document}, limits)
    if not isinstance(document, dict):
        raise RequestError("bad_request", f"a request must be a JSON object, got {_kind(document)}")
    request_id = _request_id(document.get("id"))
    try:
        unknown = sorted(set(document) - {"id", "instances", "margin", "reply_to"})
        if unknown:
            raise RequestError("bad_request", f"unknown request fields {unknown}")
        if "instances" not in document:
            raise RequestError("bad_request", "the request has no 'instances'")
        instances = document["instances"]
        _check_instances(instances, limits)
        margin = document.get("margin", False)
        if not isinstance(margin, bool):
            raise RequestError(
                "bad_request", f"'margin' must be true or false, got {_kind(margin)}"
            )
        reply_to = document.get("reply_to")
        if reply_to is not None and (not isinstance(reply_to, str) or not reply_to):
            raise RequestError("bad_request", "'reply_to' must be a non-empty string")
    except RequestError as exc:
        exc.request_id = request_id
        raise
    return Request(request_id, instances, margin, reply_to, legacy=False)


def decode_event(event: Any) -> list[Any]:
    """The records of an old Lambda-style event ``{"body": ..., "isBase64Encoded": ...}``;
    raises RequestError."""
    if not isinstance(event, dict):
        raise RequestError("bad_request", f"event must be an object, got {_kind(event)}")
    if "body" not in event:
        raise RequestError("bad_request", "event has no 'body'")
    body = event["body"]
    encoded = event.get("isBase64Encoded", False)
    if encoded is True:
        if not isinstance(body, str):
            raise RequestError("bad_request", "a base64-encoded body must be a string")
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError("bad_encoding", f"body is not valid base64: {exc}") from None
    elif encoded is not False:
        raise RequestError("bad_request", "isBase64Encoded must be true or false")
    records = strict_json.loads(body) if isinstance(body, (str, bytes)) else body
    if not isinstance(records, list):
        raise RequestError(
            "bad_instances", f"body must be a JSON list of records, got {_kind(records)}"
        )
    return records


def _legacy(event: dict[str, Any], limits: Limits) -> Request:
    records = decode_event(event)
    _check_instances(records, limits)
    return Request(None, records, margin=False, reply_to=None, legacy=True)


def _check_instances(instances: Any, limits: Limits) -> None:
    if not isinstance(instances, list):
        raise RequestError("bad_instances", f"'instances' must be a list, got {_kind(instances)}")
    if not instances:
        raise RequestError("bad_instances", "'instances' is empty")
    if len(instances) > limits.max_rows:
        raise RequestError(
            "too_large", f"{len(instances)} instances; the limit is {limits.max_rows} per request"
        )


def _request_id(value: Any) -> str | int | None:
    if value is None:
        return None
    # The Nucleus turns JSON integers in a jsonMessage into doubles (7 arrives as 7.0).
    if isinstance(value, float) and value.is_integer():
        if abs(value) < 2**53:
            return int(value)
        raise RequestError(
            "bad_request",
            f"'id' arrived as the double {value:.17g}: integers from 2**53 on lose digits "
            "when a jsonMessage carries them as doubles; send the id as a string",
        )
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(
            "bad_request", f"'id' must be a string or an integer, got {_kind(value)}"
        )
    if isinstance(value, str) and len(value) > _MAX_ID_LENGTH:
        raise RequestError("bad_request", f"'id' is longer than {_MAX_ID_LENGTH} characters")
    return value


# An "id" that is the first key of a binaryMessage, read without decoding the rest. Bounded
# repetitions only, and matched within the first bytes: constant time whatever follows.
_LEADING_ID = re.compile(
    rb'\s{0,64}\{\s{0,64}"id"\s{0,64}:\s{0,64}("(?:[^"\\]|\\.){0,256}"|-?[0-9]{1,19})\s{0,64}[,}]'
)
_LEADING_ID_SPAN = 720


def peek_id(payload: bytes | Any, *, decode_up_to: int = 0) -> str | int | None:
    """The id of a request that is not decoded in full (overload, too large, bad JSON), when
    it is cheap to find: a jsonMessage's "id"; a binaryMessage's, when it is at most
    ``decode_up_to`` bytes or "id" is its first key. None otherwise."""
    try:
        if isinstance(payload, dict):
            return _request_id(payload.get("id"))
        if not isinstance(payload, (bytes, bytearray)):
            return None
        if len(payload) <= decode_up_to:
            document = strict_json.loads(payload)
            return _request_id(document.get("id")) if isinstance(document, dict) else None
        match = _LEADING_ID.match(payload, 0, _LEADING_ID_SPAN)
        return None if match is None else _request_id(json.loads(match.group(1)))
    except (RequestError, ValueError):
        return None


def error_for(exc: Exception) -> tuple[str, str]:
    """(code, message) for an exception raised while answering a request."""
    if isinstance(exc, RequestError):
        return exc.code, exc.message
    if isinstance(exc, FeatureNameError):
        return "bad_features", str(exc)
    if isinstance(exc, InputError):
        return "bad_instances", str(exc)
    return "internal", f"{type(exc).__name__}: {exc}"


def _model(name: str, sha256: str) -> dict[str, str]:
    return {"name": name, "sha256": sha256}


def encode_reply(
    request: Request, predictions: list[Any], *, name: str, sha256: str, latency_ms: float
) -> bytes:
    reply = {
        "id": request.id,
        "predictions": predictions,
        "model": _model(name, sha256),
        "latency_ms": round(latency_ms, 3),
    }
    return json.dumps(reply, allow_nan=False).encode()


def encode_error(request_id: Any, code: str, message: str, *, name: str, sha256: str) -> bytes:
    error = {
        "id": request_id,
        "error": {"code": code, "message": message},
        "model": _model(name, sha256),
    }
    return json.dumps(error).encode()


def encode_legacy_reply(predictions: list[Any]) -> bytes:
    return json.dumps(predictions, allow_nan=False).encode()


def encode_legacy_error(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__

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

import json
import math
from dataclasses import dataclass
from typing import Any

from . import strict_json
from .exceptions import FeatureNameError, InputError, RequestError
from .lambda_handler import decode_event

__all__ = [
    "ERROR_CODES",
    "Limits",
    "Request",
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
    "bad_json": "the payload is not valid JSON (NaN/Infinity tokens and deep nesting included)",
    "bad_request": "the request is not an object with the documented fields",
    "bad_instances": "instances are not rows of numbers of the model's width",
    "bad_features": "named features are missing or unknown",
    "too_large": "the payload or the number of rows exceeds the configured limit",
    "forbidden_reply_topic": "reply_to is outside the allowed reply topics",
    "overloaded": "the work queue is full; retry later",
    "internal": "the server failed unexpectedly; the request was not answered otherwise",
}
_MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 256 * 1024
    max_rows: int = 1000


@dataclass(frozen=True, slots=True)
class Request:
    id: str | int | None
    instances: list[Any]
    margin: bool
    reply_to: str | None
    legacy: bool


def decode_request(payload: bytes | Any, *, limits: Limits, legacy_topic: bool) -> Request:
    """Decode one message. ``payload`` is the raw bytes of a binaryMessage, or the object of a
    jsonMessage (already decoded by the IPC client). Raises RequestError."""
    if isinstance(payload, (bytes, bytearray)):
        if len(payload) > limits.max_payload_bytes:
            raise RequestError(
                "too_large",
                f"payload is {len(payload)} bytes; the limit is {limits.max_payload_bytes}",
            )
        document = strict_json.loads(payload)
    else:
        try:
            _reject_non_json_numbers(payload, depth=0)
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
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(
            "bad_request", f"'id' must be a string or an integer, got {_kind(value)}"
        )
    if isinstance(value, str) and len(value) > _MAX_ID_LENGTH:
        raise RequestError("bad_request", f"'id' is longer than {_MAX_ID_LENGTH} characters")
    return value


def peek_id(payload: bytes | Any, *, max_bytes: int = 64 * 1024) -> str | int | None:
    """The id of a request that will not be answered in full (overload), when cheap to read."""
    try:
        if isinstance(payload, (bytes, bytearray)):
            if len(payload) > max_bytes:
                return None
            payload = strict_json.loads(payload)
        return _request_id(payload.get("id")) if isinstance(payload, dict) else None
    except RequestError:
        return None


def _reject_non_json_numbers(value: Any, depth: int) -> None:
    """A jsonMessage arrives decoded; NaN/Infinity in it came from tokens that are not JSON."""
    if depth > strict_json.MAX_DEPTH:
        raise RequestError(
            "bad_json", f"message is nested deeper than {strict_json.MAX_DEPTH} levels"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError("bad_json", f"{value} is not a JSON number; send null for missing")
    if isinstance(value, dict):
        for item in value.values():
            _reject_non_json_numbers(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _reject_non_json_numbers(item, depth + 1)


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

"""The Lambda entry point ``handler(event, context)``: the old contract, and Function URLs.

Two event shapes, told apart by ``requestContext``, which only an HTTP event has:

- The old Lambda-style event ``{"body": "<JSON string of records>", "isBase64Encoded": false|true}``
  gets the old answer ``{"statusCode": 200, "body": [predictions]}``. Bad input gets a 400
  answer with ``{"code", "message"}`` as its body instead of an exception, and a bundle that
  cannot be loaded a 500.
- A Lambda Function URL request (payload format 2.0: ``requestContext.http.method``,
  ``headers``, ``body``, ``isBase64Encoded``) must be a POST (else 405) of a JSON list of
  records, answered with the JSON list of predictions, or of a request as served over IPC,
  ``{"instances": [...], "margin": false, "id": ...}``, answered with the IPC reply object
  (``predictions``, ``model``, ``id``, ``latency_ms``). It is decoded exactly as over IPC
  (``protocol.decode_request``): the same error codes, strict JSON, and the limits of
  ``FUNCTION_URL_LIMITS``. The answer is what a Function URL expects: ``statusCode``,
  ``headers`` and a JSON *string* as ``body``; an error's body is ``{"code", "message"}``.

Importing this module loads no model and nothing a first request does not need: the bundle
named by ``EDGEBOOST_BUNDLE`` is loaded by the first request and kept for the next ones.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
import time

from .exceptions import BundleError, InputError, RequestError
from .model import Model
from .protocol import (
    Limits,
    decode_event,
    decode_request,
    encode_legacy_error,
    encode_legacy_reply,
    encode_reply,
    error_for,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["BUNDLE_ENV_VAR", "FUNCTION_URL_LIMITS", "decode_event", "handler"]

BUNDLE_ENV_VAR = "EDGEBOOST_BUNDLE"
# Lambda carries at most 6 MB each way through a Function URL (a synchronous invocation), so
# the IPC server's 256 KiB and 1,000 rows would refuse requests the old image answered. The
# payload limit applies to the decoded body (a base64 body is a third larger, and Lambda
# refuses it before it gets here); the reply limit leaves room for the answer's envelope
# (headers, escaping) under Lambda's limit, so that a reply too large for Lambda is our
# too_large error, not Lambda's 502. 100,000 rows bound the work of one request: about 0.1 s
# of prediction, and their replies fit (a prediction is at most 25 bytes of JSON).
FUNCTION_URL_LIMITS = Limits(
    max_payload_bytes=6 * 1024 * 1024, max_rows=100_000, max_reply_bytes=6_000_000
)
_JSON_HEADERS = {"content-type": "application/json"}
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_models: dict[str, Model] = {}


def handler(event: Any, context: Any, *, model: Model | None = None) -> dict[str, Any]:
    if isinstance(event, dict) and "requestContext" in event:
        return _answer_http(event, model)
    try:
        model = model or _default_model()
    except (BundleError, OSError) as exc:
        _log.error("cannot load the model bundle: %s", exc)
        return {"statusCode": 500, "body": {"code": "model_unavailable", "message": str(exc)}}
    try:
        records = decode_event(event)
        return {"statusCode": 200, "body": model.predict(records)}
    except (RequestError, InputError) as exc:
        code, message = error_for(exc)  # the same codes as over IPC
        return {"statusCode": 400, "body": {"code": code, "message": message}}


def _answer_http(event: dict[str, Any], model: Model | None) -> dict[str, Any]:
    started = time.perf_counter()
    method = _http_method(event)
    if method != "POST":
        # 405 with the code of any other malformed request: ERROR_CODES has no other fit.
        message = (
            f"send the records with POST, not {method}"
            if method
            else "no requestContext.http.method: not a Function URL event (payload format 2.0)"
        )
        return _http_error(405, "bad_request", message, allow="POST")
    limits = FUNCTION_URL_LIMITS
    try:
        # legacy_topic: a bare JSON list is the old request, answered with a bare list.
        request = decode_request(_http_body(event, limits), limits=limits, legacy_topic=True)
        if request.reply_to is not None:
            raise RequestError("bad_request", "'reply_to' has no meaning over HTTP")
    except RequestError as exc:
        return _http_error(400, exc.code, exc.message)
    try:
        model = model or _default_model()
    except (BundleError, OSError) as exc:
        _log.error("cannot load the model bundle: %s", exc)
        return _http_error(500, "model_unavailable", str(exc))
    try:
        predictions = model.predict(request.instances, margin=request.margin)
        if request.legacy:
            body = encode_legacy_reply(predictions)
        else:
            latency_ms = (time.perf_counter() - started) * 1000
            body = encode_reply(
                request, predictions, name=model.name, sha256=model.sha256, latency_ms=latency_ms
            )
    except Exception as exc:
        code, message = error_for(exc)
        if code == "internal":  # as the IPC server: logged with its traceback, answered
            _log.exception("internal error answering a Function URL request")
            return _http_error(500, code, message)
        return _http_error(400, code, message)
    if len(body) > limits.max_reply_bytes:
        message = (
            f"the reply is {len(body)} bytes; the limit is {limits.max_reply_bytes}: "
            f"send fewer than {len(request.instances)} instances"
        )
        return _http_error(400, "too_large", message)
    return {
        "statusCode": 200,
        "headers": dict(_JSON_HEADERS),
        "body": body.decode(),
        "isBase64Encoded": False,
    }


def _http_method(event: dict[str, Any]) -> str | None:
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, dict) else None
    method = http.get("method") if isinstance(http, dict) else None
    return method.upper() if isinstance(method, str) else None


def _http_body(event: dict[str, Any], limits: Limits) -> bytes:
    """The request's bytes. The content-type is not checked, so that callers of the old URL
    keep working whatever they send (``curl -d`` says application/x-www-form-urlencoded):
    the body alone must be JSON."""
    body = event.get("body")
    if body is None or body == "":
        raise RequestError(
            "bad_request", 'the request has no body: POST a JSON list of records or {"instances"}'
        )
    if not isinstance(body, str):
        raise RequestError("bad_request", "the event's body must be a string")
    encoded = event.get("isBase64Encoded", False)
    if encoded is False:
        # Lone surrogates (from \\udcxx escapes in the event) become bytes that are not
        # UTF-8, which decode_request refuses as bad_encoding like any other.
        return body.encode("utf-8", "surrogatepass")
    if encoded is not True:
        raise RequestError("bad_request", "isBase64Encoded must be true or false")
    if len(body) > (limits.max_payload_bytes + 2) // 3 * 4:  # not worth decoding
        raise RequestError(
            "too_large", f"the body is over {limits.max_payload_bytes} bytes once decoded"
        )
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError("bad_encoding", f"body is not valid base64: {exc}") from None


def _http_error(status: int, code: str, message: str, **headers: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**_JSON_HEADERS, **headers},
        "body": encode_legacy_error(code, message).decode(),
        "isBase64Encoded": False,
    }


def _default_model() -> Model:
    bundle = os.environ.get(BUNDLE_ENV_VAR)
    if not bundle:
        raise BundleError(f"set {BUNDLE_ENV_VAR} to the bundle folder to serve")
    with _lock:
        if bundle not in _models:
            _models[bundle] = Model.load(bundle)
        return _models[bundle]

"""Drop-in for the old Lambda-style ``handler(event, context)`` that served the wine model.

The event is ``{"body": "<JSON string of records>", "isBase64Encoded": false|true}``; the
answer is ``{"statusCode": 200, "body": [predictions]}``. Bad input gets a 400 answer with an
error code and message instead of an exception, and a bundle that cannot be loaded a 500.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from typing import Any

from . import strict_json
from .exceptions import BundleError, InputError, RequestError
from .model import Model

__all__ = ["BUNDLE_ENV_VAR", "decode_event", "handler"]

BUNDLE_ENV_VAR = "EDGEBOOST_BUNDLE"
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_models: dict[str, Model] = {}


def decode_event(event: Any) -> list[Any]:
    """The records of a Lambda-style event; raises RequestError."""
    if not isinstance(event, dict):
        raise RequestError("bad_request", f"event must be an object, got {type(event).__name__}")
    if "body" not in event:
        raise RequestError("bad_request", "event has no 'body'")
    body = event["body"]
    if event.get("isBase64Encoded", False) is True:
        if not isinstance(body, str):
            raise RequestError("bad_request", "a base64-encoded body must be a string")
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError("bad_encoding", f"body is not valid base64: {exc}") from None
    elif event.get("isBase64Encoded", False) is not False:
        raise RequestError("bad_request", "isBase64Encoded must be true or false")
    records = strict_json.loads(body) if isinstance(body, (str, bytes)) else body
    if not isinstance(records, list):
        raise RequestError(
            "bad_instances", f"body must be a JSON list of records, got {type(records).__name__}"
        )
    return records


def handler(event: Any, context: Any, *, model: Model | None = None) -> dict[str, Any]:
    try:
        model = model or _default_model()
    except (BundleError, OSError) as exc:
        _log.error("cannot load the model bundle: %s", exc)
        return {"statusCode": 500, "body": {"code": "model_unavailable", "message": str(exc)}}
    try:
        records = decode_event(event)
        return {"statusCode": 200, "body": model.predict(records)}
    except RequestError as exc:
        return {"statusCode": 400, "body": {"code": exc.code, "message": exc.message}}
    except InputError as exc:
        return {"statusCode": 400, "body": {"code": "bad_instances", "message": str(exc)}}


def _default_model() -> Model:
    bundle = os.environ.get(BUNDLE_ENV_VAR)
    if not bundle:
        raise BundleError(f"set {BUNDLE_ENV_VAR} to the bundle folder to serve")
    with _lock:
        if bundle not in _models:
            _models[bundle] = Model.load(bundle)
        return _models[bundle]

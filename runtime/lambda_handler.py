"""Drop-in for the old Lambda-style ``handler(event, context)`` that served the wine model.

The event is ``{"body": "<JSON string of records>", "isBase64Encoded": false|true}``; the
answer is ``{"statusCode": 200, "body": [predictions]}``. Bad input gets a 400 answer with an
error code and message instead of an exception, and a bundle that cannot be loaded a 500.
"""

from __future__ import annotations

import logging
import os
import threading

from .exceptions import BundleError, InputError, RequestError
from .model import Model
from .protocol import decode_event, error_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["BUNDLE_ENV_VAR", "decode_event", "handler"]

BUNDLE_ENV_VAR = "EDGEBOOST_BUNDLE"
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_models: dict[str, Model] = {}


def handler(event: Any, context: Any, *, model: Model | None = None) -> dict[str, Any]:
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


def _default_model() -> Model:
    bundle = os.environ.get(BUNDLE_ENV_VAR)
    if not bundle:
        raise BundleError(f"set {BUNDLE_ENV_VAR} to the bundle folder to serve")
    with _lock:
        if bundle not in _models:
            _models[bundle] = Model.load(bundle)
        return _models[bundle]

"""JSON shapes of the pub/sub operations: reading requests and writing subscription events.

Two kinds of bad input fail differently, as in the Nucleus: a request that cannot be
deserialized into its shape (bad JSON, wrong types, bad base64) raises :class:`MalformedRequest`
(the client gets a bare InternalServerError) before anything else is looked at; a well-formed
request with missing or conflicting parts raises a modeled :class:`ServiceError`, and only after
authorization (see :func:`check_publish_message`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeboost.broker.errors import MalformedRequest, ServiceError
from edgeboost.broker.rpc import dump_json

__all__ = [
    "PublishMessage",
    "as_doubles",
    "auth_token",
    "check_publish_message",
    "optional_string",
    "parse_publish_message",
    "parse_request",
    "subscription_event",
]


@dataclass(frozen=True, slots=True)
class PublishMessage:
    """A deserialized ``publishMessage``: a union of a JSON object and raw bytes. Each member
    may be absent, present without its ``message``, or complete; which combinations are
    errors is decided after authorization, as the Nucleus does."""

    json_message: Mapping[str, Any] | None = None
    binary_message: bytes | None = None
    has_json: bool = False  # the member was present (and not null)
    has_binary: bool = False


def parse_request(payload: bytes) -> dict[str, Any]:
    """The request payload as a JSON object (strict JSON: no NaN or Infinity)."""
    try:
        document = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: nested deeper than Python's stack allows (say 100k '[').
        raise MalformedRequest(f"request payload is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedRequest("request payload must be a JSON object")
    return document


def auth_token(payload: bytes) -> str | None:
    """``authToken`` from a CONNECT payload, or None for anything else: not UTF-8, not JSON,
    nested too deep, not an object, or a token that is not a non-empty string. The Nucleus
    refuses all of these the same way (CONNECT_ACK without the accepted flag, then close)."""
    try:
        document = parse_request(payload)
    except MalformedRequest:
        return None
    token = document.get("authToken")
    return token if isinstance(token, str) and token else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def optional_string(request: Mapping[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedRequest(f"{key} must be a string, got {type(value).__name__}")
    return value


def parse_publish_message(raw: Any, *, numbers_as_doubles: bool) -> PublishMessage | None:
    """Deserialize ``publishMessage`` of a PublishToTopic request (None when it is absent).
    Raises only :class:`MalformedRequest`: shape errors."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MalformedRequest("publishMessage must be an object")
    json_part, binary_part = raw.get("jsonMessage"), raw.get("binaryMessage")
    json_message = None
    document = _member_message(json_part, "jsonMessage")
    if document is not None:
        if not isinstance(document, dict):
            # The Nucleus deserializes this field as Map<String, Object>; anything else fails there.
            raise MalformedRequest("jsonMessage.message must be a JSON object")
        json_message = _as_doubles(document) if numbers_as_doubles else document
    binary_message = None
    encoded = _member_message(binary_part, "binaryMessage")
    if encoded is not None:
        if not isinstance(encoded, str):
            raise MalformedRequest("binaryMessage.message must be a base64 string")
        binary_message = _decode_base64(encoded)
    return PublishMessage(
        json_message, binary_message, json_part is not None, binary_part is not None
    )


def check_publish_message(message: PublishMessage | None) -> PublishMessage:
    """The Nucleus's checks on ``publishMessage`` once the caller is authorized, in its order.
    Neither member set is not an error there: subscribers receive an empty event."""
    if message is None:
        raise ServiceError("publishMessage is required")
    if message.has_json and message.has_binary:
        # The model's selfDesignateSetUnionMember() throws this; the Nucleus returns its text.
        raise ServiceError("More than one union member set for type: aws.greengrass#PublishMessage")
    if message.has_json and message.json_message is None:
        raise ServiceError("jsonMessage.message is required")
    if message.has_binary and message.binary_message is None:
        raise ServiceError("binaryMessage.message is required")
    return message


def _member_message(part: Any, name: str) -> Any:
    """The ``message`` of a union member, or None when the member or its message is absent."""
    if part is None:
        return None
    if not isinstance(part, dict):
        raise MalformedRequest(f"{name} must be an object")
    return part.get("message")


def _decode_base64(encoded: str) -> bytes:
    # Java's basic decoder: standard alphabet, padding optional.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedRequest(f"binaryMessage.message is not valid base64: {exc}") from exc


def _as_doubles(document: dict[str, Any]) -> dict[str, Any]:
    try:
        converted: dict[str, Any] = as_doubles(document)
    except RecursionError as exc:  # parsed, but with little stack to spare
        raise MalformedRequest("jsonMessage.message is nested too deeply") from exc
    return converted


def as_doubles(value: Any) -> Any:
    """Turn every JSON integer into a float, as the Nucleus's Gson does with ``Map<String,
    Object>``: a subscriber receives ``{"id": 7.0}`` for a published ``{"id": 7}``."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError as exc:
            raise MalformedRequest(f"number {value} does not fit a double") from exc
    if isinstance(value, list):
        return [as_doubles(item) for item in value]
    if isinstance(value, dict):
        return {key: as_doubles(item) for key, item in value.items()}
    raise TypeError(f"not a JSON value: {value!r}")


def subscription_event(message: PublishMessage, topic: str) -> bytes:
    """The SubscriptionResponseMessage payload for a message published to ``topic``."""
    context = {"topic": topic}
    event: dict[str, Any] = {}
    if message.json_message is not None:
        event["jsonMessage"] = {"message": message.json_message, "context": context}
    if message.binary_message is not None:
        encoded = base64.b64encode(message.binary_message).decode("ascii")
        event["binaryMessage"] = {"message": encoded, "context": context}
    try:
        return dump_json(event)
    except RecursionError as exc:  # parsed, but with little stack to spare
        raise MalformedRequest("jsonMessage.message is nested too deeply") from exc

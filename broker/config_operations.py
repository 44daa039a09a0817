"""GetConfiguration, UpdateConfiguration and SubscribeToConfigurationUpdate, as the Java Nucleus
serves them (ConfigStoreIPCEventStreamAgent); the store itself is :mod:`configuration`.

None of them is authorized: ConfigStoreIPCService registers nothing with the
AuthorizationHandler, so any component may read and watch any other's configuration, and
UpdateConfiguration has no componentName at all (a component changes only its own; a
componentName in the request is ignored like any unknown member).

Shape errors (keyPath not a list of strings, timestamp not a number, valueToMerge not an object)
fail deserialization, so the client gets InternalServerError, as for pub/sub.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from edgeboost.broker.configuration import MAX_DEPTH, ConfigError, Notification, json_document
from edgeboost.broker.context import OperationContext, Reply
from edgeboost.broker.errors import (
    FailedUpdateConditionCheckError,
    InvalidArgumentsError,
    MalformedRequest,
    ResourceNotFoundError,
    ServiceError,
)
from edgeboost.broker.messages import optional_string
from edgeboost.broker.rpc import dump_json

__all__ = [
    "CONFIGURATION_UPDATE_EVENTS",
    "GET_CONFIGURATION",
    "SUBSCRIBE_TO_CONFIGURATION_UPDATE",
    "UPDATE_CONFIGURATION",
    "get_configuration",
    "subscribe_to_configuration_update",
    "update_configuration",
]

GET_CONFIGURATION = "aws.greengrass#GetConfiguration"
UPDATE_CONFIGURATION = "aws.greengrass#UpdateConfiguration"
SUBSCRIBE_TO_CONFIGURATION_UPDATE = "aws.greengrass#SubscribeToConfigurationUpdate"
CONFIGURATION_UPDATE_EVENTS = "aws.greengrass#ConfigurationUpdateEvents"

_KEY_NOT_FOUND = "Key not found"
# Top-level keys UpdateConfiguration may not touch, matched case-sensitively as the Nucleus does
# (a List.contains). The broker never re-reads policies from the configuration anyway.
_RESTRICTED = ("accessControl",)
_LONG_MAX = 2**63 - 1


def get_configuration(context: OperationContext, request: Mapping[str, Any]) -> Reply:
    requested = optional_string(request, "componentName")
    key_path = _key_path(request)
    component = context.component.name if requested is None else requested
    value = context.config.read(component, key_path)
    if value is None:  # an unknown component, or a key path that leads nowhere
        raise ResourceNotFoundError(_KEY_NOT_FOUND)
    return Reply(
        "aws.greengrass#GetConfigurationResponse", {"componentName": component, "value": value}
    )


def subscribe_to_configuration_update(
    context: OperationContext, request: Mapping[str, Any]
) -> Reply:
    requested = optional_string(request, "componentName")
    key_path = _key_path(request)
    component = context.component.name if requested is None else requested
    watch = context.config.open_watch(component, key_path, context.sink, context.stream_id)
    if watch is None:
        raise ResourceNotFoundError(_KEY_NOT_FOUND)
    return Reply("aws.greengrass#SubscribeToConfigurationUpdateResponse", {}, watch=watch)


def update_configuration(context: OperationContext, request: Mapping[str, Any]) -> Reply:
    key_path = _key_path(request)
    raw_timestamp, raw_value = request.get("timestamp"), request.get("valueToMerge")
    timestamp = None if raw_timestamp is None else _epoch_millis(raw_timestamp)
    value = None if raw_value is None else _value_to_merge(raw_value, key_path, context)
    # The checks of UpdateConfigurationOperationHandler.validateRequest, in its order.
    if timestamp is None:
        raise InvalidArgumentsError("Timestamp is required")
    if value is None:
        raise InvalidArgumentsError("ValueToMerge is required")
    if (not key_path and any(key in _RESTRICTED for key in value)) or (
        key_path and key_path[0] in _RESTRICTED
    ):
        raise InvalidArgumentsError(
            f"Config update is not allowed for following fields [{', '.join(_RESTRICTED)}]"
        )
    try:
        notifications, stale = context.config.merge(
            context.component.name, key_path, value, timestamp
        )
    except ConfigError as exc:  # an IllegalArgumentException, through translateExceptions
        raise ServiceError(str(exc)) from exc
    then = functools.partial(_notify, notifications)
    if stale:
        # Checked after the merge, as the Nucleus does: what the merge changed stays changed,
        # and its watchers hear of it.
        error = FailedUpdateConditionCheckError(
            "Proposed timestamp is older than the config's latest modified timestamp"
        )
        return Reply("", {}, then=then, error=error)
    return Reply("aws.greengrass#UpdateConfigurationResponse", {}, then=then)


def _notify(notifications: Iterable[Notification]) -> None:
    for notification in notifications:
        watch = notification.watch
        event = {
            "configurationUpdateEvent": {
                "componentName": watch.component,
                "keyPath": list(notification.key_path),
            }
        }
        watch.sink.send_stream_event(watch.stream_id, CONFIGURATION_UPDATE_EVENTS, dump_json(event))


def _key_path(request: Mapping[str, Any]) -> tuple[str, ...]:
    """``keyPath``: absent, null and [] all mean the whole configuration."""
    raw = request.get("keyPath")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(key, str) for key in raw):
        raise MalformedRequest("keyPath must be a list of strings")
    if len(raw) > MAX_DEPTH:
        raise MalformedRequest(f"keyPath is longer than {MAX_DEPTH} keys")
    return tuple(raw)


def _epoch_millis(raw: Any) -> int:
    """The model's timestamp (seconds since the epoch, a double) in milliseconds, as
    EventStreamRPCServiceModel's Instant adapter and Instant.toEpochMilli make it: whole seconds
    and nanoseconds each truncated, then floored to milliseconds."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise MalformedRequest("timestamp must be a number of seconds")
    seconds = float(raw)  # json.getAsDouble()
    if not math.isfinite(seconds):
        raise MalformedRequest(f"timestamp {raw} is not a time")
    whole = int(seconds)
    nanos = whole * 1_000_000_000 + int((seconds - whole) * 1e9)
    millis = nanos // 1_000_000
    if abs(millis) > _LONG_MAX:
        raise ServiceError("long overflow")  # Math.multiplyExact in toEpochMilli
    return millis


def _value_to_merge(raw: Any, key_path: tuple[str, ...], context: OperationContext) -> Any:
    if not isinstance(raw, dict):
        raise MalformedRequest("valueToMerge must be a JSON object")  # Map<String, Object>
    try:
        return json_document(
            raw, doubles=context.numbers_as_doubles, depth=MAX_DEPTH - len(key_path)
        )
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"valueToMerge: {exc}") from exc

"""The lifecycle operations (LifecycleIPCEventStreamAgent): UpdateState,
SubscribeToComponentUpdates and DeferComponentUpdate. None is authorized (LifecycleIPCService
registers only PauseComponent and ResumeComponent with the AuthorizationHandler).

UpdateState records the state as the caller's own and accepts exactly the model's
ReportedLifecycleState values. The component update operations keep their state in
:class:`~edgeboost.broker.component_updates.ComponentUpdates`, which also runs a deployment's
side of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from edgeboost.broker.component_updates import DeferRequest, UpdateListener
from edgeboost.broker.context import OperationContext, Reply
from edgeboost.broker.errors import MalformedRequest, ServiceError
from edgeboost.broker.messages import optional_string

__all__ = [
    "DEFER_COMPONENT_UPDATE",
    "REPORTED_STATES",
    "SUBSCRIBE_TO_COMPONENT_UPDATES",
    "UPDATE_STATE",
    "defer_component_update",
    "subscribe_to_component_updates",
    "update_state",
]

logger = logging.getLogger(__name__)

UPDATE_STATE = "aws.greengrass#UpdateState"
SUBSCRIBE_TO_COMPONENT_UPDATES = "aws.greengrass#SubscribeToComponentUpdates"
DEFER_COMPONENT_UPDATE = "aws.greengrass#DeferComponentUpdate"
_LONG = 2**63
REPORTED_STATES = ("RUNNING", "ERRORED")  # the model's ReportedLifecycleState


def update_state(context: OperationContext, request: Mapping[str, Any]) -> Reply:
    state = request.get("state")
    if isinstance(state, dict | list):
        raise MalformedRequest("state must be a string")  # Gson cannot make a String of it
    if state not in REPORTED_STATES:
        # The Nucleus fails here on null: ReportedLifecycleState.get gives null for a missing or
        # unknown name, and toString() throws. The client gets a ServiceError whose message is
        # the JVM's, so this one is the broker's own.
        raise ServiceError(f"state must be RUNNING or ERRORED, got {json.dumps(state)}")
    name = context.component.name
    context.states.report(name, state)
    # Said at INFO so that a test running the broker as a process can see it in its log.
    logger.info("component %s reported state %s", name, state)
    return Reply("aws.greengrass#UpdateStateResponse", {})


def subscribe_to_component_updates(context: OperationContext, request: Mapping[str, Any]) -> Reply:
    """The stream stays open; its events are ComponentUpdatePolicyEvents. The Nucleus refuses
    only a component it does not know (ResourceNotFoundError): every caller here has a recipe.
    The request has no members; anything in it is ignored."""
    del request
    listener = UpdateListener(context.component.name, context.sink, context.stream_id)
    return Reply("aws.greengrass#SubscribeToComponentUpdatesResponse", {}, listener=listener)


def defer_component_update(context: OperationContext, request: Mapping[str, Any]) -> Reply:
    """Every member is optional in the model; only a missing deploymentId is refused, and a
    missing recheckAfterMs is accepted here and ignored by the waiting deployment."""
    parsed = DeferRequest(
        optional_string(request, "deploymentId"),
        optional_string(request, "message"),
        _optional_long(request, "recheckAfterMs"),
    )
    context.updates.defer(context.component.name, parsed)
    return Reply("aws.greengrass#DeferComponentUpdateResponse", {})


def _optional_long(request: Mapping[str, Any], key: str) -> int | None:
    """A Java Long as Gson reads one: an integral number (a fraction fails deserialization)."""
    value = request.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedRequest(f"{key} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise MalformedRequest(f"{key} must be a whole number, got {value}")
    if not -_LONG <= value < _LONG:
        raise MalformedRequest(f"{key} is out of range: {value}")
    return int(value)

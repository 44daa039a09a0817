"""UpdateState (LifecycleIPCEventStreamAgent.UpdateStateOperationHandler).

The Nucleus records the state as the caller's own, with no authorization (LifecycleIPCService
registers only PauseComponent and ResumeComponent with the AuthorizationHandler), and accepts
exactly the model's ReportedLifecycleState values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from edgeboost.broker.context import OperationContext, Reply
from edgeboost.broker.errors import MalformedRequest, ServiceError

__all__ = ["REPORTED_STATES", "UPDATE_STATE", "update_state"]

logger = logging.getLogger(__name__)

UPDATE_STATE = "aws.greengrass#UpdateState"
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

"""The IPC operations the broker serves (:data:`OPERATIONS`), and the pub/sub ones among them:
SubscribeToTopic and PublishToTopic. The configuration operations are in
:mod:`config_operations`, UpdateState and the component update ones in :mod:`lifecycle`;
anything else is a ServiceError.

Pub/sub checks run in the Nucleus's order (PubSubIPCEventStreamAgent): a request that cannot be
deserialized fails first (InternalServerError); then authorization on the requested topic, so a
component that may not use a topic learns nothing more about it; then the arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from edgeboost.broker.config_operations import (
    GET_CONFIGURATION,
    SUBSCRIBE_TO_CONFIGURATION_UPDATE,
    UPDATE_CONFIGURATION,
    get_configuration,
    subscribe_to_configuration_update,
    update_configuration,
)
from edgeboost.broker.context import OperationContext, Reply
from edgeboost.broker.errors import InvalidArgumentsError, UnauthorizedError
from edgeboost.broker.lifecycle import (
    DEFER_COMPONENT_UPDATE,
    SUBSCRIBE_TO_COMPONENT_UPDATES,
    UPDATE_STATE,
    defer_component_update,
    subscribe_to_component_updates,
    update_state,
)
from edgeboost.broker.messages import (
    check_publish_message,
    optional_string,
    parse_publish_message,
    subscription_event,
)
from edgeboost.broker.pubsub import (
    RECEIVE_ALL_MESSAGES,
    RECEIVE_MESSAGES_FROM_OTHERS,
    Subscription,
)
from edgeboost.broker.topics import is_wildcard_filter, publish_topic_has_wildcard

__all__ = [
    "OPERATIONS",
    "PUBLISH_TO_TOPIC",
    "SUBSCRIBE_TO_TOPIC",
    "OperationContext",
    "Reply",
    "publish_to_topic",
    "subscribe_to_topic",
]

SUBSCRIBE_TO_TOPIC = "aws.greengrass#SubscribeToTopic"
PUBLISH_TO_TOPIC = "aws.greengrass#PublishToTopic"
_RECEIVE_MODES = (RECEIVE_ALL_MESSAGES, RECEIVE_MESSAGES_FROM_OTHERS)


def _authorize(context: OperationContext, operation: str, topic: str | None) -> None:
    """The Nucleus's AuthorizationHandler: an empty resource is refused outright, and a missing
    one (null) is allowed by any policy that grants the operation, whatever its resources."""
    if topic == "":
        raise UnauthorizedError("Resource cannot be empty")
    component = context.component
    if topic is None:
        if not component.grants(operation):
            raise UnauthorizedError(component.denial(operation, "null"))
    elif not component.is_authorized(operation, topic):
        raise UnauthorizedError(component.denial(operation, topic))


def subscribe_to_topic(context: OperationContext, request: Mapping[str, Any]) -> Reply:
    topic = optional_string(request, "topic")
    mode = optional_string(request, "receiveMode")
    _authorize(context, SUBSCRIBE_TO_TOPIC, topic)
    if not topic:
        raise InvalidArgumentsError("Subscribe topic must not be empty")
    if mode not in _RECEIVE_MODES:
        # Absent, or unknown: the model's ReceiveMode.get() gives null and the default applies.
        # Wildcard filters then do not echo the subscriber's own messages.
        mode = RECEIVE_MESSAGES_FROM_OTHERS if is_wildcard_filter(topic) else RECEIVE_ALL_MESSAGES
    subscription = Subscription(
        context.component.name, topic, mode, context.sink, context.stream_id
    )
    return Reply("aws.greengrass#SubscribeToTopicResponse", {}, subscription)


def publish_to_topic(context: OperationContext, request: Mapping[str, Any]) -> Reply:
    topic = optional_string(request, "topic")
    raw_message = parse_publish_message(
        request.get("publishMessage"), numbers_as_doubles=context.numbers_as_doubles
    )
    _authorize(context, PUBLISH_TO_TOPIC, topic)
    message = check_publish_message(raw_message)
    if topic is None:
        raise InvalidArgumentsError("Publish topic must not be null")
    if publish_topic_has_wildcard(topic):
        raise InvalidArgumentsError("Publish topic must not contain a wildcard.")
    event = subscription_event(message, topic)  # may still fail: before anything is sent
    # The response is queued before the fan-out. The Nucleus promises no order between the two:
    # it hands the events to an executor, then returns the response (PubSubIPCEventStreamAgent),
    # and nucleus lite races them too. Sending the event first, as the broker used to, let a
    # client believe its own event had always arrived by the time its publish completed.
    fan_out = functools.partial(context.hub.publish, topic, context.component.name, event)
    return Reply("aws.greengrass#PublishToTopicResponse", {}, then=fan_out)


OPERATIONS: Mapping[str, Callable[[OperationContext, Mapping[str, Any]], Reply]] = {
    SUBSCRIBE_TO_TOPIC: subscribe_to_topic,
    PUBLISH_TO_TOPIC: publish_to_topic,
    GET_CONFIGURATION: get_configuration,
    UPDATE_CONFIGURATION: update_configuration,
    SUBSCRIBE_TO_CONFIGURATION_UPDATE: subscribe_to_configuration_update,
    UPDATE_STATE: update_state,
    SUBSCRIBE_TO_COMPONENT_UPDATES: subscribe_to_component_updates,
    DEFER_COMPONENT_UPDATE: defer_component_update,
}

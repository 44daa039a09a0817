"""What an operation handler is given (:class:`OperationContext`) and returns (:class:`Reply`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeboost.broker.component_updates import ComponentUpdates, UpdateListener
from edgeboost.broker.configuration import ConfigStore, ConfigWatch
from edgeboost.broker.errors import IpcError
from edgeboost.broker.policy import ComponentPolicy
from edgeboost.broker.pubsub import EventSink, PubSubHub, Subscription
from edgeboost.broker.states import ComponentStates

__all__ = ["OperationContext", "Reply"]


@dataclass(frozen=True, slots=True)
class OperationContext:
    """What a handler may use: the caller's identity, the broker's state (pub/sub, every
    component's configuration and reported state, who listens for component updates), and
    where its stream's events go."""

    component: ComponentPolicy
    hub: PubSubHub
    config: ConfigStore
    states: ComponentStates
    updates: ComponentUpdates
    sink: EventSink
    stream_id: int
    numbers_as_doubles: bool


@dataclass(frozen=True, slots=True)
class Reply:
    """The first (response) message of a stream. With a ``subscription`` (pub/sub), a
    ``watch`` (configuration) or a ``listener`` (component updates) the stream stays open and
    the session registers it after sending the response; without one it is terminated.
    ``then`` runs once the response is queued (a publish's fan-out, a configuration change's
    events).

    With ``error`` the stream gets that error instead of the response, and ``then`` still runs:
    for a failure found after the change was made (UpdateConfiguration's stale timestamp)."""

    model_type: str
    payload: Mapping[str, Any]
    subscription: Subscription | None = None
    watch: ConfigWatch | None = None
    listener: UpdateListener | None = None
    then: Callable[[], object] | None = None
    error: IpcError | None = None

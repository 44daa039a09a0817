"""The subscription table and fan-out. Everything here runs on the broker's event loop thread.

Fan-out never waits: each subscriber's session queues frames and writes them on its own, so a
slow or dead subscriber cannot hold up the publisher or the others.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from edgeboost.broker.topics import filter_matches, topic_levels

__all__ = [
    "RECEIVE_ALL_MESSAGES",
    "RECEIVE_MESSAGES_FROM_OTHERS",
    "SUBSCRIPTION_MESSAGE_TYPE",
    "EventSink",
    "PubSubHub",
    "Subscription",
    "SubscriptionInfo",
]

RECEIVE_ALL_MESSAGES = "RECEIVE_ALL_MESSAGES"
RECEIVE_MESSAGES_FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"
SUBSCRIPTION_MESSAGE_TYPE = "aws.greengrass#SubscriptionResponseMessage"


class EventSink(Protocol):
    """Where a subscription's events go (a client session). Must never block or raise."""

    def send_stream_event(self, stream_id: int, model_type: str, payload: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A read-only view of one live subscription, for tests and diagnostics."""

    component: str
    topic_filter: str
    receive_mode: str
    stream_id: int


@dataclass(eq=False)
class Subscription:
    """One open SubscribeToTopic stream. Identity matters: two streams with the same filter are
    two subscriptions."""

    component: str
    topic_filter: str
    receive_mode: str
    sink: EventSink
    stream_id: int
    _levels: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._levels = topic_levels(self.topic_filter)

    def wants(self, levels: tuple[str, ...], source_component: str) -> bool:
        if self.receive_mode == RECEIVE_MESSAGES_FROM_OTHERS and source_component == self.component:
            return False
        return filter_matches(self._levels, levels)

    def info(self) -> SubscriptionInfo:
        return SubscriptionInfo(
            self.component, self.topic_filter, self.receive_mode, self.stream_id
        )


class PubSubHub:
    """All live subscriptions of one broker.

    Mutated only on the event loop thread; other threads read :attr:`view` and may wait on
    :attr:`changed` (notified after every add or remove) instead of polling.
    """

    def __init__(self) -> None:
        # A dict keeps subscription order, so delivery order is stable across runs.
        self._subscriptions: dict[Subscription, None] = {}
        self._view: tuple[SubscriptionInfo, ...] = ()
        self.changed = threading.Condition()

    @property
    def view(self) -> tuple[SubscriptionInfo, ...]:
        """An immutable snapshot of the live subscriptions, safe to read from any thread."""
        return self._view

    def add(self, subscription: Subscription) -> None:
        self._subscriptions[subscription] = None
        self._publish_view()

    def remove(self, subscription: Subscription) -> bool:
        """Drop a subscription; False if it was already gone."""
        if subscription not in self._subscriptions:
            return False
        del self._subscriptions[subscription]
        self._publish_view()
        return True

    def publish(self, topic: str, source_component: str, payload: bytes) -> int:
        """Queue ``payload`` (a SubscriptionResponseMessage) on every matching subscription;
        return how many got it."""
        levels = topic_levels(topic)
        # Copy: a sink that overflows drops its own subscriptions while we iterate.
        targets = [s for s in self._subscriptions if s.wants(levels, source_component)]
        for subscription in targets:
            subscription.sink.send_stream_event(
                subscription.stream_id, SUBSCRIPTION_MESSAGE_TYPE, payload
            )
        return len(targets)

    def _publish_view(self) -> None:
        with self.changed:
            self._view = tuple(subscription.info() for subscription in self._subscriptions)
            self.changed.notify_all()

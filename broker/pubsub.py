"""The subscription table and fan-out. Everything here runs on the broker's event loop thread.

Fan-out never waits: each subscriber's session queues frames and writes them on its own, so a
slow or dead subscriber cannot hold up the publisher or the others.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from edgeboost.broker.topics import filter_matches, has_wildcard_level, topic_levels

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

    def send_stream_event(self, stream_id: int, model_type: str, payload: bytes) -> bool:
        """Queue the event; False when the stream is gone (or the event cannot be sent)."""
        ...


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
    levels: tuple[str, ...] = field(init=False, repr=False)
    order: int = field(default=0, init=False, repr=False)  # set by the hub: delivery order

    def __post_init__(self) -> None:
        self.levels = topic_levels(self.topic_filter)

    def accepts_from(self, source_component: str) -> bool:
        return not (
            self.receive_mode == RECEIVE_MESSAGES_FROM_OTHERS and source_component == self.component
        )

    def wants(self, levels: tuple[str, ...], source_component: str) -> bool:
        return self.accepts_from(source_component) and filter_matches(self.levels, levels)

    def info(self) -> SubscriptionInfo:
        return SubscriptionInfo(
            self.component, self.topic_filter, self.receive_mode, self.stream_id
        )


class PubSubHub:
    """All live subscriptions of one broker.

    Adding or removing a subscription costs O(1) whatever the table's size, so a connection
    holding 100k subscriptions can open and close them without stalling the event loop. Filters
    without wildcards are found by a dict lookup on publish; only wildcard filters are scanned.

    Mutated only on the event loop thread, under :attr:`changed` (a Condition) so that other
    threads can take a consistent :attr:`view` and wait for changes instead of polling.
    """

    def __init__(self) -> None:
        self._all: dict[Subscription, None] = {}  # insertion order = delivery order
        self._exact: dict[tuple[str, ...], dict[Subscription, None]] = {}
        self._wildcard: dict[Subscription, None] = {}
        self._next_order = itertools.count()
        self._version = 0  # bumped on every change; the view is rebuilt lazily
        self._view: tuple[int, tuple[SubscriptionInfo, ...]] = (0, ())
        self.changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._all)

    @property
    def view(self) -> tuple[SubscriptionInfo, ...]:
        """An immutable snapshot of the live subscriptions, safe to read from any thread.

        Built on demand (O(n)), never on add or remove: rebuilding it per change made opening
        n subscriptions cost O(n^2)."""
        with self.changed:
            version, cached = self._view
            if version == self._version:
                return cached
            version, members = self._version, list(self._all)  # a C-speed copy under the lock
        snapshot = tuple(subscription.info() for subscription in members)
        with self.changed:
            if version > self._view[0]:
                self._view = (version, snapshot)
        return snapshot

    def wait_for(
        self, predicate: Callable[[list[SubscriptionInfo]], bool], timeout: float
    ) -> list[SubscriptionInfo]:
        """Block until ``predicate(view)`` holds; raise TimeoutError otherwise. Woken by changes,
        and the view is taken outside the lock so a waiting thread never holds up the loop."""
        deadline = time.monotonic() + timeout
        while True:
            with self.changed:
                seen = self._version
            snapshot = list(self.view)
            if predicate(snapshot):
                return snapshot
            with self.changed:
                while self._version == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        shown = ", ".join(map(str, snapshot[:5]))
                        raise TimeoutError(
                            f"subscriptions did not reach the expected state: {len(snapshot)} "
                            f"live ({shown}{', ...' if len(snapshot) > 5 else ''})"
                        )
                    self.changed.wait(remaining)

    def add(self, subscription: Subscription) -> None:
        with self.changed:
            subscription.order = next(self._next_order)
            self._all[subscription] = None
            if has_wildcard_level(subscription.levels):
                self._wildcard[subscription] = None
            else:
                self._exact.setdefault(subscription.levels, {})[subscription] = None
            self._changed()

    def remove(self, subscription: Subscription) -> bool:
        """Drop a subscription; False if it was already gone."""
        return self.remove_all((subscription,)) == 1

    def remove_all(self, subscriptions: Iterable[Subscription]) -> int:
        """Drop many subscriptions (a closing connection's) with one notification; return how
        many were live."""
        removed = 0
        with self.changed:
            for subscription in subscriptions:
                if self._all.pop(subscription, _GONE) is _GONE:
                    continue
                removed += 1
                if subscription in self._wildcard:
                    del self._wildcard[subscription]
                    continue
                same_filter = self._exact[subscription.levels]
                del same_filter[subscription]
                if not same_filter:
                    del self._exact[subscription.levels]
            if removed:
                self._changed()
        return removed

    def publish(self, topic: str, source_component: str, payload: bytes) -> int:
        """Queue ``payload`` (a SubscriptionResponseMessage) on every matching subscription;
        return how many got it."""
        levels = topic_levels(topic)
        if not levels:
            return 0  # "/" splits to no levels; the Nucleus never delivers those
        # Copies: a sink that overflows drops its own subscriptions while we iterate.
        exact = [s for s in self._exact.get(levels, ()) if s.accepts_from(source_component)]
        wildcard = [s for s in self._wildcard if s.wants(levels, source_component)]
        targets = exact + wildcard
        if exact and wildcard:
            targets.sort(key=_delivery_order)
        for subscription in targets:
            subscription.sink.send_stream_event(
                subscription.stream_id, SUBSCRIPTION_MESSAGE_TYPE, payload
            )
        return len(targets)

    def _changed(self) -> None:
        self._version += 1
        self.changed.notify_all()


_GONE = object()


def _delivery_order(subscription: Subscription) -> int:
    return subscription.order

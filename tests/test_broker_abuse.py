"""The broker stays up under abuse: huge subscription tables, connections that never log in,
stalled partial frames, hostile CONNECT payloads and subscribers that never read. Timing bounds
are generous (a loaded 2-core CI machine must not flake); each one is orders of magnitude
below what the broker did before the matching fix."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgeboost.broker import Broker
from edgeboost.broker.eventstream import Header, MessageType, encode_message
from edgeboost.broker.pubsub import RECEIVE_ALL_MESSAGES, PubSubHub, Subscription

from . import test_broker_protocol as protocol
from .test_broker_protocol import PUBLISH, SUBSCRIBE, RawClient, header_value

socket_path = protocol.socket_path  # fixtures shared with the protocol tests
start_broker = protocol.start_broker

MANY = 100_000


class _NullSink:
    def send_stream_event(self, stream_id: int, model_type: str, payload: bytes) -> None:
        pass


def test_hub_adds_and_removes_100k_subscriptions_in_linear_time() -> None:
    # Before: every add and remove rebuilt the whole view, O(n) each; 8k took 19 s each way.
    hub, sink = PubSubHub(), _NullSink()
    subscriptions = [
        Subscription("C", f"t/{i % 1000}/{i}", RECEIVE_ALL_MESSAGES, sink, i + 1)
        for i in range(MANY)
    ]
    wildcard = Subscription("C", "t/+/7", RECEIVE_ALL_MESSAGES, sink, MANY + 1)
    started = time.perf_counter()
    for subscription in subscriptions:
        hub.add(subscription)
    hub.add(wildcard)
    assert len(hub) == MANY + 1 and len(hub.view) == MANY + 1
    assert hub.publish("t/7/7", "P", b"{}") == 2  # the exact filter and the wildcard one
    assert [s.topic_filter for s in hub.view[:2]] == ["t/0/0", "t/1/1"]
    for subscription in subscriptions[::2]:
        assert hub.remove(subscription)
    assert hub.remove_all(subscriptions) == MANY // 2
    assert not hub.remove(subscriptions[0])
    elapsed = time.perf_counter() - started
    assert [s.topic_filter for s in hub.view] == ["t/+/7"]
    assert elapsed < 10, f"100k subscriptions took {elapsed:.1f} s to add and remove"


def _subscribe_frames(first: int, count: int) -> bytes:
    """``count`` SubscribeToTopic requests on streams ``first``..., to topics ``bulk/<id>``."""
    frames = []
    for stream_id in range(first, first + count):
        headers = (
            Header.string("operation", SUBSCRIBE),
            Header.int32(":message-type", MessageType.APPLICATION_MESSAGE),
            Header.int32(":message-flags", 0),
            Header.int32(":stream-id", stream_id),
        )
        frames.append(encode_message(headers, b'{"topic": "bulk/%d"}' % stream_id))
    return b"".join(frames)


def _open_subscriptions(client: RawClient, count: int, batch: int = 500) -> None:
    """Pipeline ``count`` subscriptions, reading each batch's responses before the next (a
    client that never read would be cut off as too slow)."""
    for first in range(1, count + 1, batch):
        size = min(batch, count + 1 - first)
        client.sock.sendall(_subscribe_frames(first, size))
        for _ in range(size):
            response = client.receive()
            assert header_value(response, "service-model-type") == (
                "aws.greengrass#SubscribeToTopicResponse"
            )


def test_closing_a_connection_with_100k_subscriptions_does_not_freeze_the_others(
    start_broker: Callable[..., Broker],
) -> None:
    # Before: 10k subscriptions took 34 s to open and closing them froze every connection 37 s.
    broker = start_broker()
    path = Path(broker.socket_path)
    with RawClient(path) as hoarder, RawClient(path) as prober:
        hoarder.sock.settimeout(60)
        hoarder.connect("tok-a")
        prober.connect("tok-b")
        prober.call(SUBSCRIBE, {"topic": "probe"})
        prober.receive()
        started = time.perf_counter()
        _open_subscriptions(hoarder, MANY)
        opened = time.perf_counter() - started
        assert len(broker.subscriptions()) == MANY + 1
        assert opened < 60, f"opening {MANY} subscriptions took {opened:.1f} s"

        round_trips: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            request = {"topic": "probe", "publishMessage": {"jsonMessage": {"message": {}}}}
            while not stop.is_set():
                sent = time.perf_counter()
                prober.call(PUBLISH, request)
                streams = {header_value(prober.receive(), ":stream-id") for _ in range(2)}
                assert len(streams) == 2  # the event and the publish response
                round_trips.append(time.perf_counter() - sent)

        def wait_for_round_trips(count: int) -> None:
            deadline = time.monotonic() + 30
            while len(round_trips) < count and thread.is_alive():
                assert time.monotonic() < deadline, "the prober is stuck"
                time.sleep(0.01)
            assert len(round_trips) >= count, "the prober failed"

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        try:
            wait_for_round_trips(3)
            closing = time.perf_counter()
            hoarder.sock.close()
            broker.wait_for_subscriptions(lambda subs: len(subs) == 1, 30)
            closed = time.perf_counter() - closing
            wait_for_round_trips(len(round_trips) + 3)  # and some after the close
        finally:
            stop.set()
            thread.join(10)
        assert closed < 10, f"dropping {MANY} subscriptions took {closed:.1f} s"
        assert max(round_trips) < 1.0, f"slowest round trip {max(round_trips):.2f} s"

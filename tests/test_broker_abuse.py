"""The broker stays up under abuse: huge subscription tables, connections that never log in,
stalled partial frames, hostile CONNECT payloads and subscribers that never read. Timing bounds
are generous (a loaded 2-core CI machine must not flake); each one is orders of magnitude
below what the broker did before the matching fix."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeboost.broker import Broker
from edgeboost.broker.budget import ByteBudget
from edgeboost.broker.limits import LOGIN_FRAME_SIZE
from edgeboost.broker.pubsub import RECEIVE_ALL_MESSAGES, PubSubHub, Subscription
from edgeboost.runtime.eventstream import MAX_MESSAGE_SIZE, Header, MessageType, encode_message

from . import test_broker_cli as cli_tests
from . import test_broker_protocol as protocol
from .test_broker_protocol import PUBLISH, SUBSCRIBE, RawClient, header_value

socket_path = protocol.socket_path  # fixtures shared with the other broker tests
start_broker = protocol.start_broker
workdir = cli_tests.workdir

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


@pytest.mark.slow
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


# -- logging in, and frames that never finish ----------------------------------------------------


def _prelude(total: int) -> bytes:
    """The 12-byte prelude of a frame declaring ``total`` bytes (no headers)."""
    head = struct.pack(">II", total, 0)
    return head + struct.pack(">I", zlib.crc32(head))


def _closed_within(client: RawClient, seconds: float) -> float:
    """Wait for the broker to close ``client``'s connection; return how long it took."""
    started = time.monotonic()
    client.sock.settimeout(seconds)
    client.assert_closed_by_broker()
    return time.monotonic() - started


def test_a_connection_that_never_logs_in_is_closed(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker(login_timeout=0.3)
    path = Path(broker.socket_path)
    with RawClient(path) as silent, RawClient(path) as partial, RawClient(path) as good:
        partial.sock.sendall(_prelude(100) + b"half a CONNECT")
        good.connect()
        assert _closed_within(silent, 5) < 3
        assert _closed_within(partial, 5) < 3
        time.sleep(0.3)  # well past the login timeout: a logged-in client is not affected
        good.send(MessageType.PING)
        assert header_value(good.receive(), ":message-type") == MessageType.PING_RESPONSE


def test_a_frame_that_stalls_halfway_is_dropped(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker(frame_timeout=0.3)
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        time.sleep(0.4)  # idle between frames is fine
        client.sock.sendall(_prelude(1000) + bytes(100))
        assert _closed_within(client, 5) < 3


def test_frames_over_the_limits_are_refused_at_the_prelude(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker(max_frame_size=LOGIN_FRAME_SIZE * 2)
    path = Path(broker.socket_path)
    with RawClient(path) as early:
        early.sock.sendall(_prelude(LOGIN_FRAME_SIZE + 1))  # before CONNECT: 64 KiB at most
        assert _closed_within(early, 5) < 3
    with RawClient(path) as late:
        late.connect()
        late.sock.sendall(_prelude(LOGIN_FRAME_SIZE * 2 + 1))
        assert _closed_within(late, 5) < 3
    with RawClient(path) as fine:  # a frame at the limit is read
        fine.connect()
        fine.send(MessageType.PING, payload=bytes(LOGIN_FRAME_SIZE * 2 - 200))
        assert header_value(fine.receive(), ":message-type") == MessageType.PING_RESPONSE


def test_stalled_partial_frames_share_one_budget(start_broker: Callable[..., Broker]) -> None:
    """Big frames still arriving hold at most max_partial_bytes in all; a frame that does not
    fit waits its turn (the broker stops reading it) and small frames are never held up."""
    frame = LOGIN_FRAME_SIZE * 2
    broker = start_broker(max_frame_size=frame, max_partial_bytes=frame * 2)
    path = Path(broker.socket_path)
    with (
        RawClient(path) as first,
        RawClient(path) as second,
        RawClient(path) as waiting,
        RawClient(path) as small,
    ):
        for client in (first, second, waiting, small):
            client.connect()
        for holder in (first, second):
            holder.sock.sendall(_prelude(frame) + bytes(1000))  # takes a share, then stalls
        time.sleep(0.2)
        waiting.send(MessageType.PING, payload=bytes(frame - 200))
        small.send(MessageType.PING, payload=b"small")
        assert small.receive().payload == b"small"
        waiting.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            waiting.receive()  # the budget is spent on the two stalled frames
        first.sock.close()  # gives its share back
        waiting.sock.settimeout(5)
        assert len(waiting.receive().payload) == frame - 200


def test_byte_budget_is_first_come_first_served() -> None:
    async def scenario() -> list[str]:
        budget, order = ByteBudget(10), []

        async def take(name: str, size: int) -> None:
            await budget.take(size)
            order.append(name)

        await budget.take(8)
        big = asyncio.create_task(take("big", 6))
        small = asyncio.create_task(take("small", 1))  # fits now, but queues behind "big"
        cancelled = asyncio.create_task(take("cancelled", 5))
        await asyncio.sleep(0)
        assert order == [] and budget.free == 2
        cancelled.cancel()
        budget.give(8)
        await asyncio.gather(big, small, cancelled, return_exceptions=True)
        assert budget.free == 3
        with pytest.raises(ValueError):
            await budget.take(11)
        return order

    assert asyncio.run(scenario()) == ["big", "small"]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
@pytest.mark.parametrize("logged_in", [False, True], ids=["before-CONNECT", "after-CONNECT"])
def test_twenty_stalled_max_size_frames_do_not_exhaust_memory(
    workdir: Path, logged_in: bool
) -> None:
    """Twenty connections each start a 16 MiB frame, send all of it but the last byte, and
    stall. Before: the broker grew by 323 MiB either way. Now a frame over 64 KiB is refused
    before CONNECT, and after CONNECT such frames share one 64 MiB budget."""
    sock = workdir / "ipc.sock"
    command = [
        *(sys.executable, "-m", "edgeboost.broker", "--socket", str(sock)),
        *("--recipe", f"{cli_tests._recipe(workdir, 'com.example.A')}:tok-a"),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as broker:
        try:
            assert broker.stdout is not None
            assert "listening" in broker.stdout.readline()
            before = _rss_mib(broker.pid)

            def attack(client: RawClient) -> None:
                if logged_in:
                    client.connect()
                client.sock.settimeout(3)  # the broker stops reading; give up then
                with contextlib.suppress(OSError):
                    client.sock.sendall(_prelude(MAX_MESSAGE_SIZE) + body)

            body = bytes(MAX_MESSAGE_SIZE - 13)
            clients = [RawClient(sock) for _ in range(20)]
            threads = [threading.Thread(target=attack, args=(c,)) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            time.sleep(0.5)
            growth = _rss_mib(broker.pid) - before
            assert cli_tests._connect_accepted(str(sock), "tok-a")  # still serving
            for client in clients:
                client.sock.close()
        finally:
            broker.terminate()
            broker.wait(10)
    limit = 112 if logged_in else 16  # the 64 MiB budget plus interpreter slack
    assert growth < limit, f"the broker grew by {growth:.0f} MiB"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"login_timeout": 0}, "login_timeout must be positive"),
        ({"max_frame_size": MAX_MESSAGE_SIZE + 1}, "max_frame_size must be"),
        ({"max_frame_size": 1000}, "max_frame_size must be"),
        ({"max_partial_bytes": MAX_MESSAGE_SIZE - 1}, "at least one max_frame_size"),
        ({"max_pending_frames": 0}, "at least 1"),
    ],
)
def test_limits_are_checked(tmp_path: Path, options: dict[str, float], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Broker(tmp_path / "s", protocol.COMPONENTS, **options)  # type: ignore[arg-type]


# -- hostile JSON ------------------------------------------------------------------------------


def test_a_connect_too_big_to_be_one_is_closed_quietly(
    start_broker: Callable[..., Broker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        client.send(
            MessageType.CONNECT,
            headers=(Header.string(":version", "0.1.0"),),
            payload=b"[" * 100_000,  # over the 64 KiB allowed before CONNECT
        )
        client.assert_closed_by_broker()
    broker.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_deeply_nested_requests_are_refused_not_crashed_on(
    start_broker: Callable[..., Broker], caplog: pytest.LogCaptureFixture
) -> None:
    """However deep the JSON, a request is either served or refused as the Nucleus refuses
    what it cannot deserialize (a bare InternalServerError); never a traceback."""
    broker = start_broker()
    limit = sys.getrecursionlimit()
    depths = [100_000, *range(50, limit + 100, 50)]  # across where each step gives up
    template = '{"topic": "t", "publishMessage": {"jsonMessage": {"message": {"a": %s}}}}'
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        client.call(SUBSCRIBE, {"topic": "t"})
        client.receive()
        outcomes = {}
        for depth in depths:
            nested = "[" * depth + "]" * depth
            stream_id = client.call_raw(PUBLISH, (template % nested).encode())
            reply = client.receive()
            if header_value(reply, ":stream-id") != stream_id:  # the event came first
                assert header_value(reply, "service-model-type") == (
                    "aws.greengrass#SubscriptionResponseMessage"
                )
                reply = client.receive()
            outcomes[depth] = header_value(reply, "service-model-type") or reply.payload.decode()
        assert set(outcomes.values()) == {
            "aws.greengrass#PublishToTopicResponse",
            "InternalServerError",
        }, outcomes
        assert outcomes[100_000] == "InternalServerError"
        client.send(MessageType.PING)
        assert header_value(client.receive(), ":message-type") == MessageType.PING_RESPONSE
    broker.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- subscribers that never read --------------------------------------------------------------


def test_a_stuck_subscriber_is_cut_off_by_bytes_not_only_by_frames(
    start_broker: Callable[..., Broker],
) -> None:
    """Before, only the frame count was bounded: 1024 unread 1 MiB events (a GiB) per stuck
    client. Now its unsent bytes are bounded too (here 16 MiB, the smallest allowed)."""
    broker = start_broker(max_pending_bytes=MAX_MESSAGE_SIZE)
    path = Path(broker.socket_path)
    event = {"topic": "bulk", "publishMessage": {"binaryMessage": {"message": "A" * 2**20}}}
    with RawClient(path) as stuck, RawClient(path) as publisher:
        stuck.connect("tok-a")
        stuck.call(SUBSCRIBE, {"topic": "bulk"})
        stuck.receive()
        publisher.connect("tok-b")
        sent = 0
        while broker.subscriptions() and sent < 64:
            publisher.call(PUBLISH, event)
            publisher.receive()
            sent += 1
        assert sent < 40, f"cut off only after {sent} MiB, if at all"
        stuck.assert_closed_by_broker()


def test_an_event_too_big_to_send_is_dropped_and_the_publish_succeeds(
    start_broker: Callable[..., Broker], caplog: pytest.LogCaptureFixture
) -> None:
    """An event frame carries more headers than a bare request, so a request of exactly
    16 MiB makes an event over the limit. The Nucleus then fails that send alone; before,
    the broker logged a crash and answered the publisher with ServiceError."""
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        client.call(SUBSCRIBE, {"topic": "big"})
        client.receive()
        headers = (
            Header.string("operation", PUBLISH),
            Header.int32(":message-type", MessageType.APPLICATION_MESSAGE),
            Header.int32(":message-flags", 0),
            Header.int32(":stream-id", 2),
        )
        head, tail = b'{"topic":"big","publishMessage":{"binaryMessage":{"message":"', b'"}}}'
        room = MAX_MESSAGE_SIZE - len(encode_message(headers, head + tail))
        spaces = room % 4  # JSON whitespace pads the request to exactly the limit
        request = b" " * spaces + head + b"A" * (room - spaces) + tail
        frame = encode_message(headers, request)
        assert len(frame) == MAX_MESSAGE_SIZE
        client.sock.sendall(frame)
        reply = client.receive()  # no event comes first
        assert header_value(reply, "service-model-type") == "aws.greengrass#PublishToTopicResponse"
    broker.stop()
    assert "not sent" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- too many connections -----------------------------------------------------------------------

_LOW_FD_BROKER = (
    "import resource, runpy; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
    "runpy.run_module('edgeboost.broker', run_name='__main__', alter_sys=True)"
)


def test_running_out_of_file_descriptors_is_said_once_and_clears(workdir: Path) -> None:
    """A flood of connections that never log in fills the broker's descriptors (here 64):
    new clients wait in the backlog, and asyncio used to log a traceback for each of the 100
    backlog slots every second. Now that is one warning, and the login timeout frees the
    descriptors so a client gets in again once the flood stops."""
    sock, log = workdir / "ipc.sock", workdir / "broker.log"
    command = [
        *(sys.executable, "-c", _LOW_FD_BROKER, "--socket", str(sock), "--login-timeout", "1"),
        *("--recipe", f"{cli_tests._recipe(workdir, 'com.example.A')}:tok-a"),
    ]
    flood: list[socket.socket] = []
    with (
        log.open("w") as stderr,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True) as broker,
    ):
        try:
            assert broker.stdout is not None
            assert "listening" in broker.stdout.readline()
            failures = 0
            while failures < 5 and len(flood) < 300:  # until the backlog is full too
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.settimeout(0.2)
                try:
                    client.connect(str(sock))
                except OSError:
                    client.close()
                    failures += 1
                    continue
                flood.append(client)
            assert len(flood) > 64, "the flood never filled the broker's descriptors"
            deadline = time.monotonic() + 20
            while True:  # each wave of the flood is dropped after the 1 s login timeout
                try:
                    assert cli_tests._connect_accepted(str(sock), "tok-a")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "no client got in after the flood"
                    time.sleep(0.2)
        finally:
            for client in flood:
                client.close()
            broker.terminate()
            broker.wait(10)
    text = log.read_text()
    assert text.count("out of system resource") + text.count("cannot accept") <= 3, text[:2000]
    assert "Too many open files" in text

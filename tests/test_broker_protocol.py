"""The broker over a raw Unix socket, frame by frame: the handshake, connection-level errors,
stream rules, fan-out isolation and the socket file's life cycle. Needs nothing but the
standard library (the awsiotsdk client is exercised in test_broker_ipc.py)."""

from __future__ import annotations

import base64
import json
import logging
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from edgeboost.broker import AccessPolicy, Broker, ComponentPolicy, SocketPathError
from edgeboost.runtime.eventstream import (
    FrameDecoder,
    Header,
    HeaderType,
    Message,
    MessageFlag,
    MessageType,
    encode_message,
)

SUBSCRIBE = "aws.greengrass#SubscribeToTopic"
PUBLISH = "aws.greengrass#PublishToTopic"
TIMEOUT = 5.0


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    """A socket path under tmp_path, or under a short temporary folder when tmp_path is too
    long for a Unix socket (108 bytes)."""
    path = tmp_path / "ipc.sock"
    if len(bytes(path)) < 100:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="eb-") as short:
        yield Path(short) / "ipc.sock"


@pytest.fixture
def start_broker(socket_path: Path) -> Iterator[Callable[..., Broker]]:
    """start_broker(components=None, **options) -> a running broker, stopped at teardown."""
    brokers: list[Broker] = []

    def start(components: dict[str, ComponentPolicy] | None = None, **options: Any) -> Broker:
        broker = Broker(socket_path, components or COMPONENTS, **options)
        brokers.append(broker.start())
        return broker

    yield start
    for broker in brokers:
        broker.stop()


COMPONENTS = {
    "tok-a": ComponentPolicy.allow_all("CompA"),
    "tok-b": ComponentPolicy.allow_all("CompB"),
}


def header_value(message: Message, name: str) -> Any:
    header = message.find(name)
    return None if header is None else header.value


class RawClient:
    """A minimal event-stream peer for poking at the broker frame by frame."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(path))
        self._decoder = FrameDecoder()
        self._ready: list[Message] = []
        self._next_stream = 1

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(
        self,
        message_type: int,
        *,
        flags: int = 0,
        stream_id: int = 0,
        headers: Sequence[Header] = (),
        payload: bytes = b"",
    ) -> None:
        routing = (
            Header.int32(":message-type", message_type),
            Header.int32(":message-flags", flags),
            Header.int32(":stream-id", stream_id),
        )
        self.sock.sendall(encode_message((*headers, *routing), payload))

    def receive(self) -> Message:
        while not self._ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self._ready.extend(self._decoder.feed(data))
        return self._ready.pop(0)

    def assert_closed_by_broker(self) -> None:
        """Everything left is read and then the broker has closed its end."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass

    def connect(self, token: str = "tok-a", version: str = "0.1.0") -> Message:
        self.send(
            MessageType.CONNECT,
            headers=(Header.string(":version", version),),
            payload=json.dumps({"authToken": token}).encode(),
        )
        return self.receive()

    def call(self, operation: str, request: dict[str, Any], stream_id: int | None = None) -> int:
        """Open a stream with an operation request; return its stream id."""
        return self.call_raw(operation, json.dumps(request).encode(), stream_id)

    def call_raw(self, operation: str, payload: bytes, stream_id: int | None = None) -> int:
        """Like :meth:`call` with the request payload as given (any bytes)."""
        if stream_id is None:
            stream_id = self._next_stream
        self._next_stream = stream_id + 1
        self.send(
            MessageType.APPLICATION_MESSAGE,
            stream_id=stream_id,
            headers=(
                Header.string(":content-type", "application/json"),
                Header.string("service-model-type", f"{operation}Request"),
                Header.string("operation", operation),
            ),
            payload=payload,
        )
        return stream_id


def expect_protocol_error(client: RawClient, text: str) -> None:
    reply = client.receive()
    assert header_value(reply, ":message-type") == MessageType.PROTOCOL_ERROR
    assert text in json.loads(reply.payload)["message"]
    client.assert_closed_by_broker()


def test_connect_ping_and_header_layout(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        ack = client.connect()
        assert [h.name for h in ack.headers] == [":message-type", ":message-flags", ":stream-id"]
        assert header_value(ack, ":message-flags") == MessageFlag.CONNECTION_ACCEPTED
        client.send(MessageType.PING, headers=(Header.string("x-echo", "yes"),), payload=b"hi")
        pong = client.receive()
        assert header_value(pong, ":message-type") == MessageType.PING_RESPONSE
        assert header_value(pong, "x-echo") == "yes" and pong.payload == b"hi"


@pytest.mark.parametrize(
    ("version", "payload"),
    [
        ("0.2.0", b'{"authToken": "tok-a"}'),
        ("0.1.0", b'{"authToken": "nope"}'),
        ("0.1.0", b"not json"),
        ("0.1.0", b'{"token": "tok-a"}'),
        ("0.1.0", b"[" * 60_000),  # nested past Python's recursion limit
        ("0.1.0", b"[1]"),
        ("0.1.0", b'"tok-a"'),
        ("0.1.0", b'{"authToken": 5}'),
        ("0.1.0", b'{"authToken": ["tok-a"]}'),
        ("0.1.0", b'{"authToken": ""}'),
        ("0.1.0", b'{"authToken": "tok-a"'),
        ("0.1.0", b"\xff\xfe"),
        ("0.1.0", b""),
    ],
)
def test_bad_connect_is_refused_then_closed(
    start_broker: Callable[..., Broker],
    caplog: pytest.LogCaptureFixture,
    version: str,
    payload: bytes,
) -> None:
    # The broker waits up to flush_timeout for a refused client to hang up; this one does not.
    broker = start_broker(flush_timeout=0.2)
    with RawClient(Path(broker.socket_path)) as client:
        client.send(
            MessageType.CONNECT, headers=(Header.string(":version", version),), payload=payload
        )
        ack = client.receive()
        assert header_value(ack, ":message-type") == MessageType.CONNECT_ACK
        assert header_value(ack, ":message-flags") == 0
        client.assert_closed_by_broker()
    broker.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_connection_rules(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker()
    path = Path(broker.socket_path)
    with RawClient(path) as client:
        client.send(MessageType.PING)
        expect_protocol_error(client, "first message must be a CONNECT")
    with RawClient(path) as client:
        client.connect()
        client.send(MessageType.CONNECT, headers=(Header.string(":version", "0.1.0"),))
        expect_protocol_error(client, "only one CONNECT")
    with RawClient(path) as client:
        client.connect()
        client.call(SUBSCRIBE, {"topic": "t"}, stream_id=2)
        expect_protocol_error(client, "skips ids")
    with RawClient(path) as client:
        client.connect()
        client.send(MessageType.APPLICATION_MESSAGE, stream_id=1, payload=b"{}")
        expect_protocol_error(client, "no operation header")
    with RawClient(path) as client:
        client.connect()
        client.sock.sendall(encode_message((Header.int32(":message-type", 2),)))
        expect_protocol_error(client, "INT32 headers")
    with RawClient(path) as client:
        client.connect()
        client.send(MessageType.PING, stream_id=3)
        expect_protocol_error(client, "only allowed on application messages")


def test_corrupt_frame_closes_only_that_connection(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as bad, RawClient(Path(broker.socket_path)) as good:
        bad.connect()
        good.connect()
        frame = bytearray(encode_message((Header.int32(":message-type", 2),)))
        frame[-1] ^= 0xFF
        bad.sock.sendall(bytes(frame))
        bad.assert_closed_by_broker()
        good.send(MessageType.PING)
        assert header_value(good.receive(), ":message-type") == MessageType.PING_RESPONSE


def test_error_replies_and_the_connection_survives(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        client.call("aws.greengrass#ListComponents", {})
        error = client.receive()
        assert header_value(error, ":message-type") == MessageType.APPLICATION_ERROR
        assert header_value(error, ":message-flags") == MessageFlag.TERMINATE_STREAM
        assert header_value(error, "service-model-type") == "aws.greengrass#ServiceError"
        assert json.loads(error.payload) == {
            "message": "Unsupported operation aws.greengrass#ListComponents",
            "_service": "aws.greengrass#GreengrassCoreIPC",
            "_message": "Unsupported operation aws.greengrass#ListComponents",
            "_errorCode": "ServiceError",
        }
        # A request the Nucleus cannot deserialize: bare text, no model type, stream ended.
        client.call(PUBLISH, {"topic": "t", "publishMessage": {"jsonMessage": {"message": [1]}}})
        internal = client.receive()
        assert header_value(internal, ":message-type") == MessageType.APPLICATION_ERROR
        assert header_value(internal, ":content-type") == "text/plain"
        assert internal.find("service-model-type") is None
        assert internal.payload == b"InternalServerError"
        client.send(MessageType.PING)
        assert header_value(client.receive(), ":message-type") == MessageType.PING_RESPONSE


def test_raw_round_trip_and_stream_closing(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        sub = client.call(SUBSCRIBE, {"topic": "t/+", "receiveMode": "RECEIVE_ALL_MESSAGES"})
        response = client.receive()
        assert header_value(response, "service-model-type") == (
            "aws.greengrass#SubscribeToTopicResponse"
        )
        assert header_value(response, ":message-flags") == 0  # the stream stays open
        pub = client.call(
            PUBLISH, {"topic": "t/1", "publishMessage": {"jsonMessage": {"message": {"n": 1}}}}
        )
        done = client.receive()  # the publish's response comes before its fan-out
        assert header_value(done, ":stream-id") == pub
        assert header_value(done, ":message-flags") == MessageFlag.TERMINATE_STREAM
        event = client.receive()
        assert header_value(event, ":stream-id") == sub
        assert header_value(event, "service-model-type") == (
            "aws.greengrass#SubscriptionResponseMessage"
        )
        assert json.loads(event.payload) == {
            "jsonMessage": {"message": {"n": 1.0}, "context": {"topic": "t/1"}}
        }
        # An event sent by the client on an open subscription ends it with InternalServerError.
        client.send(MessageType.APPLICATION_MESSAGE, stream_id=sub, payload=b"{}")
        assert client.receive().payload == b"InternalServerError"
        broker.wait_for_subscriptions(lambda subs: not subs, TIMEOUT)
        # A late TERMINATE for a stream that is already closed is ignored.
        client.send(
            MessageType.APPLICATION_MESSAGE, stream_id=sub, flags=MessageFlag.TERMINATE_STREAM
        )
        client.send(MessageType.PING)
        assert header_value(client.receive(), ":message-type") == MessageType.PING_RESPONSE


def test_subscriber_that_vanishes_is_unsubscribed(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        client.call(SUBSCRIBE, {"topic": "t"})
        client.receive()
        assert [s.topic_filter for s in broker.subscriptions()] == ["t"]
    broker.wait_for_subscriptions(lambda subs: not subs, TIMEOUT)


def _binary_publish(topic: str, size: int) -> dict[str, Any]:
    data = base64.b64encode(bytes(size)).decode()
    return {"topic": topic, "publishMessage": {"binaryMessage": {"message": data}}}


def test_a_stuck_subscriber_does_not_block_the_others(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker(max_pending_frames=4)
    path = Path(broker.socket_path)
    count, size = 32, 256 * 1024  # ~11 MB of events: far more than socket buffers hold
    with RawClient(path) as stuck, RawClient(path) as fast, RawClient(path) as publisher:
        stuck.connect("tok-a")
        fast.connect("tok-b")
        publisher.connect("tok-a")
        for client in (stuck, fast):
            client.call(SUBSCRIBE, {"topic": "bulk"})
            client.receive()
        for _ in range(count):  # the stuck client never reads a byte
            publisher.call(PUBLISH, _binary_publish("bulk", size))
            assert header_value(publisher.receive(), "service-model-type") == (
                "aws.greengrass#PublishToTopicResponse"
            )
            event = fast.receive()  # in lock step, so the fast client is never behind
            assert header_value(event, "service-model-type") == (
                "aws.greengrass#SubscriptionResponseMessage"
            )
        remaining = broker.wait_for_subscriptions(lambda subs: len(subs) == 1, TIMEOUT)
        assert [s.component for s in remaining] == ["CompB"]
        stuck.assert_closed_by_broker()


def test_stop_closes_clients_and_removes_the_socket(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        broker.stop()
        client.assert_closed_by_broker()
    assert not Path(broker.socket_path).exists()
    assert not broker.running
    broker.stop()  # idempotent


def test_restart_on_the_same_path(start_broker: Callable[..., Broker]) -> None:
    first = start_broker()
    first.stop()
    second = start_broker()
    assert second.socket_path == first.socket_path
    with RawClient(Path(second.socket_path)) as client:
        assert header_value(client.connect("tok-b"), ":message-flags") == 1


def test_stale_socket_file_is_replaced(
    start_broker: Callable[..., Broker], socket_path: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(socket_path))  # bound, never listening: what a killed broker leaves
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        assert header_value(client.connect(), ":message-flags") == 1


def test_live_socket_and_other_files_are_left_alone(
    start_broker: Callable[..., Broker], socket_path: Path, tmp_path: Path
) -> None:
    start_broker()
    with pytest.raises(SocketPathError, match="already serving"):
        Broker(socket_path, COMPONENTS).start()
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me")
    with pytest.raises(SocketPathError, match="not a socket"):
        Broker(regular, COMPONENTS).start()
    assert regular.read_text() == "keep me"
    with pytest.raises(SocketPathError, match="cannot listen"):
        Broker(tmp_path / "no-such-folder" / "ipc.sock", COMPONENTS).start()


def test_constructor_checks(tmp_path: Path) -> None:
    with pytest.raises(SocketPathError, match="over the Unix limit"):
        Broker("/tmp/" + "x" * 120, COMPONENTS)
    with pytest.raises(TypeError, match="ComponentPolicy"):
        Broker(tmp_path / "s", {"tok": "CompA"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-empty"):
        Broker(tmp_path / "s", {"": ComponentPolicy("C")})
    broker = Broker(tmp_path / "s", COMPONENTS)
    assert broker.client_env("tok-b") == {
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(tmp_path / "s"),
        "SVCUID": "tok-b",
    }
    with pytest.raises(KeyError):
        broker.client_env("unknown")


def test_header_types_other_than_strings_are_accepted_in_requests(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        client.send(
            MessageType.APPLICATION_MESSAGE,
            stream_id=1,
            headers=(
                Header.string("operation", SUBSCRIBE),
                Header.boolean("x-flag", True),
                Header("x-id", HeaderType.UUID, uuid.uuid4()),
            ),
            payload=b'{"topic": "t"}',
        )
        assert header_value(client.receive(), ":stream-id") == 1


def test_integers_can_be_kept_as_integers(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker(numbers_as_doubles=False)
    with RawClient(Path(broker.socket_path)) as client:
        client.connect()
        client.call(SUBSCRIBE, {"topic": "t"})
        client.receive()
        client.call(
            PUBLISH, {"topic": "t", "publishMessage": {"jsonMessage": {"message": {"id": 7}}}}
        )
        client.receive()  # the publish's response
        event = json.loads(client.receive().payload)
        assert event["jsonMessage"]["message"] == {"id": 7}
        assert isinstance(event["jsonMessage"]["message"]["id"], int)


RESTRICTED = {
    "tok-r": ComponentPolicy(
        "Restricted",
        (
            AccessPolicy("pub", frozenset({PUBLISH}), ("t/*",)),
            AccessPolicy("sub", frozenset({SUBSCRIBE}), ("t/*",)),
        ),
    ),
    "tok-s": ComponentPolicy("SubscribeOnly", (AccessPolicy("s", frozenset({SUBSCRIBE}), ()),)),
}
_BOTH = {"jsonMessage": {"message": {}}, "binaryMessage": {"message": "eA"}}
_UNION = "More than one union member set for type: aws.greengrass#PublishMessage"


@pytest.mark.parametrize(
    ("token", "operation", "request_", "error", "message"),
    [
        # Authorization comes first: a topic the component may not use hides every other flaw.
        ("tok-r", PUBLISH, {"topic": "denied/x", "publishMessage": _BOTH}, "Unauthorized", ""),
        ("tok-r", PUBLISH, {"topic": "denied/x"}, "UnauthorizedError", "on resource denied/x"),
        ("tok-r", PUBLISH, {"topic": "denied/#", "publishMessage": {}}, "Unauthorized", ""),
        ("tok-r", SUBSCRIBE, {"topic": "denied/x", "receiveMode": "BOGUS"}, "Unauthorized", ""),
        # The Nucleus refuses an empty resource before looking at any policy...
        ("tok-r", PUBLISH, {"topic": "", "publishMessage": {}}, "Unauthorized", "cannot be empty"),
        ("tok-r", SUBSCRIBE, {"topic": ""}, "UnauthorizedError", "Resource cannot be empty"),
        # ...and lets a missing (null) one through any policy granting the operation.
        ("tok-s", PUBLISH, {"publishMessage": {}}, "UnauthorizedError", "on resource null"),
        ("tok-s", SUBSCRIBE, {}, "InvalidArgumentsError", "Subscribe topic must not be empty"),
        ("tok-r", PUBLISH, {"publishMessage": {}}, "InvalidArgumentsError", "must not be null"),
        # Then publishMessage, in the order the Nucleus reads it, before the topic's own checks.
        ("tok-r", PUBLISH, {"publishMessage": _BOTH}, "ServiceError", _UNION),
        ("tok-r", PUBLISH, {"topic": "t/#", "publishMessage": _BOTH}, "ServiceError", _UNION),
        ("tok-r", PUBLISH, {"topic": "t/#"}, "ServiceError", "publishMessage is required"),
        ("tok-r", PUBLISH, {"topic": "t/#", "publishMessage": {}}, "InvalidArguments", "wildcard"),
    ],
)
def test_checks_run_in_the_nucleus_order(
    start_broker: Callable[..., Broker],
    token: str,
    operation: str,
    request_: dict[str, Any],
    error: str,
    message: str,
) -> None:
    broker = start_broker(RESTRICTED)
    with RawClient(Path(broker.socket_path)) as client:
        client.connect(token)
        client.call(operation, request_)
        reply = client.receive()
        assert header_value(reply, ":message-type") == MessageType.APPLICATION_ERROR
        model_type = header_value(reply, "service-model-type")
        assert model_type.startswith(f"aws.greengrass#{error}")
        assert message in json.loads(reply.payload)["message"]


def test_shape_errors_come_before_authorization(start_broker: Callable[..., Broker]) -> None:
    """The Nucleus deserializes a request before its handler authorizes it, so a request it
    cannot deserialize is an InternalServerError whatever the topic."""
    broker = start_broker(RESTRICTED)
    with RawClient(Path(broker.socket_path)) as client:
        client.connect("tok-r")
        bad = {"jsonMessage": {"message": [1]}, "binaryMessage": {"message": "eA"}}
        client.call(PUBLISH, {"topic": "denied/x", "publishMessage": bad})
        assert client.receive().payload == b"InternalServerError"


def test_publish_with_neither_member_delivers_an_empty_event(
    start_broker: Callable[..., Broker],
) -> None:
    """Not an error in the Nucleus: the union's check only refuses more than one member."""
    broker = start_broker(RESTRICTED)
    with RawClient(Path(broker.socket_path)) as client:
        client.connect("tok-r")
        client.call(SUBSCRIBE, {"topic": "t/2", "receiveMode": "RECEIVE_ALL_MESSAGES"})
        client.receive()
        for publish_message in ({}, {"jsonMessage": None, "binaryMessage": None}):
            client.call(PUBLISH, {"topic": "t/2", "publishMessage": publish_message})
            done, event = client.receive(), client.receive()
            assert header_value(event, "service-model-type") == (
                "aws.greengrass#SubscriptionResponseMessage"
            )
            assert event.payload == b"{}"
            assert header_value(done, "service-model-type") == (
                "aws.greengrass#PublishToTopicResponse"
            )


def test_an_unknown_receive_mode_is_the_default(start_broker: Callable[..., Broker]) -> None:
    """The model's ReceiveMode.get() turns an unknown name into null, so the Nucleus applies
    the default: for a wildcard filter, not the subscriber's own messages."""
    broker = start_broker(RESTRICTED)
    with RawClient(Path(broker.socket_path)) as client:
        client.connect("tok-r")
        client.call(SUBSCRIBE, {"topic": "t/+", "receiveMode": "NOT_A_MODE"})
        assert header_value(client.receive(), ":message-flags") == 0  # subscribed
        client.call(SUBSCRIBE, {"topic": "t/1", "receiveMode": "NOT_A_MODE"})
        wanted = client.receive()
        client.call(PUBLISH, {"topic": "t/1", "publishMessage": {"jsonMessage": {"message": {}}}})
        assert header_value(client.receive(), "service-model-type") == (
            "aws.greengrass#PublishToTopicResponse"
        )
        event = client.receive()
        assert header_value(event, ":stream-id") == header_value(wanted, ":stream-id")

"""The built-in IPC client: the frames it sends are the ones awsiotsdk sends (compared with a
capture of awsiotsdk 1.31 / awscrt 0.36.1), and no frame a server sends can crash or hang it."""

from __future__ import annotations

import ast
import contextlib
import json
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeboost.runtime.eventstream import (
    FrameDecoder,
    Header,
    Message,
    MessageType,
    encode_message,
)
from edgeboost.runtime.exceptions import IpcRefusedError, IpcUnconfirmedError
from edgeboost.runtime.ipc_connection import (
    ConnectionLost,
    IpcConnection,
    binary_publish_request,
)
from edgeboost.runtime.ipc_transport import BuiltinTransport

from .conftest import SHARED, need

CAPTURE = SHARED / "data" / "ipc" / "frames-trial.log"
_LINE = re.compile(
    r"C->S len=(?P<len>\d+) hdrlen=(?P<hdrlen>\d+) prelude_crc=(?P<prelude>0x[0-9a-f]+) "
    r"msg_crc=(?P<crc>[0-9a-f]+) (?P<headers>.*) payload=(?P<payload>b'.*')$"
)
_HEADER = re.compile(r"(\S+?):(STRING|INT32)=('(?:[^']*)'|-?\d+)")


def captured_client_frames() -> list[dict[str, Any]]:
    """The frames awsiotsdk sent in the capture, in order."""
    need(CAPTURE.is_file(), f"{CAPTURE} (the IPC frame capture)")
    frames = []
    for line in CAPTURE.read_text().splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        headers = [
            (name, kind, ast.literal_eval(value) if kind == "STRING" else int(value))
            for name, kind, value in _HEADER.findall(match["headers"])
        ]
        frames.append(
            {
                "len": int(match["len"]),
                "hdrlen": int(match["hdrlen"]),
                "crc": int(match["crc"], 16),
                "headers": headers,
                "payload": ast.literal_eval(match["payload"]),
            }
        )
    return frames


def described(frame: bytes) -> dict[str, Any]:
    (message,) = FrameDecoder().feed(frame)
    return {
        "len": len(frame),
        "hdrlen": int.from_bytes(frame[4:8], "big"),
        "crc": int.from_bytes(frame[-4:], "big"),
        "headers": [(h.name, h.type.name, h.value) for h in message.headers],
        "payload": message.payload,
    }


class Peer:
    """The server end of a socketpair: frames the client wrote, and a way to answer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.decoder, self.raw = sock, FrameDecoder(), b""

    def frames(self, count: int, timeout: float = 5.0) -> list[bytes]:
        self.sock.settimeout(timeout)
        while True:
            frames, offset, data = [], 0, self.raw
            while len(data) - offset >= 4:
                total = int.from_bytes(data[offset : offset + 4], "big")
                if len(data) - offset < total:
                    break
                frames.append(data[offset : offset + total])
                offset += total
            if len(frames) >= count:
                return frames[:count]
            self.raw += self.sock.recv(65536)


def ack(accepted: bool = True) -> bytes:
    return encode_message(
        [
            Header.int32(":message-type", MessageType.CONNECT_ACK),
            Header.int32(":message-flags", 1 if accepted else 0),
            Header.int32(":stream-id", 0),
        ]
    )


def test_the_frames_are_the_ones_awsiotsdk_sends() -> None:
    expected = captured_client_frames()
    client_end, server_end = socket.socketpair()
    peer = Peer(server_end)
    server_end.sendall(ack())
    connection = IpcConnection(client_end, call_timeout_s=2)
    connection._login("tok-pub")
    connection.call("SubscribeToTopic", {"topic": "t/1"})
    connection.call(
        "PublishToTopic", {"topic": "t/1", "publishMessage": {"jsonMessage": {"message": {"a": 1}}}}
    )
    connection.terminate(1)
    connection.call("PublishToTopic", binary_publish_request("t/#", b"x"))
    connection.call("SubscribeToTopic", {"topic": "denied/x"})
    connection.call("GetConfiguration", {"keyPath": ["a"]})
    ours = [described(frame) for frame in peer.frames(7)]
    connection.close()
    server_end.close()
    # The capture's last frame is a PING the test client sent; the component never pings.
    assert len(expected) == 8 and expected[-1]["headers"][0][2] == MessageType.PING
    for mine, theirs in zip(ours, expected[:7], strict=True):
        assert mine["headers"] == theirs["headers"]  # names, types, values, order
        assert mine["payload"] == theirs["payload"]
        assert (mine["len"], mine["hdrlen"], mine["crc"]) == (
            theirs["len"],
            theirs["hdrlen"],
            theirs["crc"],
        )  # so byte for byte the same frame


def test_a_refused_connect_ack_is_a_refusal() -> None:
    client_end, server_end = socket.socketpair()
    server_end.sendall(ack(accepted=False))
    connection = IpcConnection(client_end, call_timeout_s=2)
    with pytest.raises(IpcRefusedError, match="refused the token"):
        connection._login("t")
    connection.close()
    server_end.close()


def test_a_connection_closed_in_answer_to_connect_is_a_refusal() -> None:
    # Nucleus lite's answer to a token it does not know (or forgot when it restarted).
    client_end, server_end = socket.socketpair()
    server_end.shutdown(socket.SHUT_WR)  # reads the CONNECT, answers with the end of the stream
    connection = IpcConnection(client_end, call_timeout_s=2)
    with pytest.raises(IpcRefusedError, match="ConnectionClosed"):
        connection._login("t")
    connection.close()
    server_end.close()


def test_a_call_without_an_answer_is_unconfirmed_after_the_timeout() -> None:
    client_end, server_end = socket.socketpair()
    server_end.sendall(ack())
    connection = IpcConnection(client_end, call_timeout_s=0.3)
    connection._login("t")
    _, answer = connection.call("PublishToTopic", binary_publish_request("t", b"x"))
    started = time.monotonic()
    while not answer.done():
        connection.pump(0.05)
    assert isinstance(answer.exception(), IpcUnconfirmedError)
    assert 0.25 < time.monotonic() - started < 1.0
    connection.close()
    server_end.close()


# --- a server that misbehaves -------------------------------------------------------------------
class HostileServer:
    """Accepts connections, logs them in and answers their subscriptions, then sends ``attack``
    on the first connection; later connections are served normally and get one delivery."""

    def __init__(self, path: Path, attack: bytes, *, close_after: bool) -> None:
        self.path, self.attack, self.close_after = path, attack, close_after
        self.connections = 0
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(
                target=self._session, args=(sock, self.connections), daemon=True
            ).start()

    def _session(self, sock: socket.socket, number: int) -> None:
        decoder = FrameDecoder()
        try:
            with sock:
                self._expect(sock, decoder, MessageType.CONNECT)
                sock.sendall(ack())
                subscribe = self._expect(sock, decoder, MessageType.APPLICATION_MESSAGE)
                stream = subscribe.find(":stream-id")
                assert stream is not None
                sock.sendall(_answer(int(stream.value), "SubscribeToTopicResponse", {}))
                if number == 1:
                    time.sleep(0.2)  # after the subscription is answered: a reconnect
                    sock.sendall(self.attack)
                    if not self.close_after:
                        time.sleep(30)  # the rest of the frame never comes
                    return
                event = {"binaryMessage": {"message": "aGk=", "context": {"topic": "t"}}}
                sock.sendall(_answer(int(stream.value), "SubscriptionResponseMessage", event))
                time.sleep(30)
        except OSError:
            return

    @staticmethod
    def _expect(sock: socket.socket, decoder: FrameDecoder, kind: MessageType) -> Message:
        while True:
            data = sock.recv(65536)
            if not data:
                raise OSError("client went away")
            for message in decoder.feed(data):
                header = message.find(":message-type")
                if header is not None and header.value == kind:
                    return message

    def close(self) -> None:
        self._listener.close()


def _answer(stream_id: int, model: str, document: Any, kind: int = 0, flags: int = 0) -> bytes:
    return encode_message(
        [
            Header.string(":content-type", "application/json"),
            Header.string("service-model-type", f"aws.greengrass#{model}"),
            Header.int32(":message-type", kind),
            Header.int32(":message-flags", flags),
            Header.int32(":stream-id", stream_id),
        ],
        json.dumps(document).encode(),
    )


def _frame(headers: list[Header], payload: bytes = b"") -> bytes:
    return encode_message(headers, payload)


ATTACKS: dict[str, tuple[bytes, bool]] = {
    "garbage": (b"\x00\x01garbage" * 100, True),
    "prelude declaring 2 GiB": (b"\x80\x00\x00\x00" + b"\x00" * 8, True),
    "bad prelude CRC": (bytes(12), True),
    "bad message CRC": (_answer(1, "X", {})[:-1] + b"\x00", True),
    "not JSON": (
        _frame(
            [
                Header.int32(":message-type", 0),
                Header.int32(":message-flags", 0),
                Header.int32(":stream-id", 1),
            ],
            b"{not json",
        ),
        True,
    ),
    "no message type": (_frame([Header.int32(":stream-id", 1)]), True),
    "message type as a string": (
        _frame([Header.string(":message-type", "0"), Header.int32(":stream-id", 1)]),
        True,
    ),
    "protocol error": (
        _frame(
            [
                Header.int32(":message-type", MessageType.PROTOCOL_ERROR),
                Header.int32(":message-flags", 0),
                Header.int32(":stream-id", 0),
            ],
            b'{"message": "no"}',
        ),
        True,
    ),
    "event that is a list": (_answer(1, "SubscriptionResponseMessage", [1, 2]), True),
    "truncated frame, then close": (_answer(1, "X", {"a": 1})[:20], True),
    "unknown header type": (
        b"\x00\x00\x00\x1a\x00\x00\x00\x06"
        + (0x26AE0F4F).to_bytes(4, "big")  # any CRC: the prelude check fails first
        + b"\x01a\x63\x00\x00\x00\x00\x00\x00",
        True,
    ),
    "close at once": (b"", True),
}


@pytest.fixture()
def socket_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ipc-", dir="/tmp") as folder:
        yield Path(folder)


def _run_transport(path: Path) -> tuple[BuiltinTransport, list[Any], list[Exception]]:
    received: list[Any] = []
    fatal: list[Exception] = []
    transport = BuiltinTransport(
        socket_path=str(path), auth_token="t", call_timeout_s=1.0, backoff_s=(0.01, 0.05)
    )
    transport.start(["t"], lambda message: received.append(message.payload), fatal.append)
    return transport, received, fatal


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hostile_server_frame_drops_the_connection_and_it_comes_back(
    attack: str, socket_dir: Path
) -> None:
    payload, close_after = ATTACKS[attack]
    server = HostileServer(socket_dir / "s", payload, close_after=close_after)
    transport, received, fatal = _run_transport(server.path)
    try:
        assert _wait(lambda: received == [b"hi"], 5), (attack, received, server.connections)
        assert server.connections == 2 and transport.reconnects == 1
        assert not fatal
    finally:
        transport.close(1)
        server.close()


def test_a_frame_that_never_ends_does_not_hang_a_publish(socket_dir: Path) -> None:
    server = HostileServer(socket_dir / "s", _answer(1, "X", {})[:30], close_after=False)
    transport, _, _ = _run_transport(server.path)
    try:
        started = time.monotonic()
        with pytest.raises(IpcUnconfirmedError):
            transport.publish("t", b"x").result(5)
        assert time.monotonic() - started < 2.0
    finally:
        transport.close(1)
        server.close()


@given(st.binary(min_size=1, max_size=400))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_random_bytes_from_the_server_never_crash_the_client(data: bytes) -> None:
    client_end, server_end = socket.socketpair()
    server_end.sendall(ack() + data)
    server_end.shutdown(socket.SHUT_WR)  # then the end of the stream
    connection = IpcConnection(client_end, call_timeout_s=0.5)
    connection._login("t")
    # Whatever arrives: dispatched, or the connection is declared lost; nothing else escapes.
    with pytest.raises(ConnectionLost):
        for _ in range(100):
            connection.pump(0.05)
    connection.close()
    server_end.close()


# --- component updates: what awsiotsdk sends, and what the built-in client does with events ----
class RecordingServer:
    """Logs clients in (one connection at a time), answers each new stream with an empty
    response (the stream stays open), or a ServiceError for an operation in ``refuse``, and
    keeps every frame a client sent after its CONNECT, as bytes, with the connection's
    number."""

    def __init__(self, path: Path, refuse: tuple[str, ...] = ()) -> None:
        self.path, self.refuse = path, refuse
        self.frames: list[tuple[int, bytes]] = []
        self.connection: socket.socket | None = None
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def operations(self, connection: int) -> list[str]:
        """The operations a connection opened streams for, in order."""
        found = []
        for number, frame in list(self.frames):
            operation = FrameDecoder().feed(frame)[0].find("operation")
            if number == connection and operation is not None:
                found.append(str(operation.value).removeprefix("aws.greengrass#"))
        return found

    def _serve(self) -> None:
        number = 0
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            number += 1
            self.connection = sock
            with contextlib.suppress(OSError), sock:
                self._session(sock, number)

    def _session(self, sock: socket.socket, number: int) -> None:
        raw, connected = b"", False
        while data := sock.recv(65536):
            raw += data
            while len(raw) >= 4 and len(raw) >= int.from_bytes(raw[:4], "big"):
                size = int.from_bytes(raw[:4], "big")
                frame, raw = raw[:size], raw[size:]
                if not connected:
                    connected = True
                    sock.sendall(ack())
                    continue
                self.frames.append((number, frame))
                (message,) = FrameDecoder().feed(frame)
                operation, stream = message.find("operation"), message.find(":stream-id")
                if operation is None or stream is None:
                    continue
                model = str(operation.value).removeprefix("aws.greengrass#")
                if model in self.refuse:
                    refusal = {"_message": "no", "_errorCode": "ServiceError"}
                    sock.sendall(_answer(int(stream.value), "ServiceError", refusal, kind=1))
                else:
                    sock.sendall(_answer(int(stream.value), f"{model}Response", {}))

    def send(self, frame: bytes) -> None:
        assert self.connection is not None
        self.connection.sendall(frame)

    def drop(self) -> None:
        """Close the current connection from the server's side."""
        assert self.connection is not None
        self.connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


def _awsiotsdk_update_frames(path: Path) -> list[bytes]:
    """The frames awsiotsdk's V2 client sends to subscribe to component updates and to defer
    one (twice: with a message, and without one, recheck 0)."""
    import awsiot.greengrasscoreipc as ipc
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    server = RecordingServer(path)
    client = GreengrassCoreIPCClientV2(client=ipc.connect(ipc_socket=str(path), authtoken="t"))
    try:
        client.subscribe_to_component_updates(on_stream_event=lambda event: None)
        client.defer_component_update(
            deployment_id="d-1", message="edgeboost: 3 requests in flight", recheck_after_ms=1000
        )
        client.defer_component_update(deployment_id="d-1", recheck_after_ms=0)
    finally:
        client.close()
        server.close()
    return [frame for _, frame in server.frames[:3]]


def test_component_update_frames_are_the_ones_awsiotsdk_sends(socket_dir: Path) -> None:
    need(_has_awsiotsdk(), "awsiotsdk (pip install awsiotsdk)")
    theirs = [described(frame) for frame in _awsiotsdk_update_frames(socket_dir / "sdk")]
    server = RecordingServer(socket_dir / "ours")
    transport = BuiltinTransport(socket_path=str(server.path), auth_token="t")
    transport.start([], lambda message: None, lambda error: None)
    try:
        assert transport.subscribe_to_component_updates(lambda kind, event: None).result(5) == {}
        transport.defer_component_update("d-1", 1000, "edgeboost: 3 requests in flight").result(5)
        transport.defer_component_update("d-1", 0).result(5)
    finally:
        transport.close(1)
        server.close()
    ours = [described(frame) for _, frame in server.frames[:3]]
    assert len(theirs) == len(ours) == 3
    for mine, sdk in zip(ours, theirs, strict=True):
        assert mine == sdk  # headers (names, types, values, order), payload, length, CRC
    assert json.loads(ours[1]["payload"]) == {
        "deploymentId": "d-1",
        "message": "edgeboost: 3 requests in flight",
        "recheckAfterMs": 1000,
    }


def test_component_update_events_reach_the_callback_and_survive_a_reconnect(
    socket_dir: Path,
) -> None:
    server = RecordingServer(socket_dir / "s", refuse=("SubscribeToConfigurationUpdate",))
    heard: list[tuple[str, dict[str, Any]]] = []
    transport = BuiltinTransport(
        socket_path=str(server.path), auth_token="t", backoff_s=(0.01, 0.05)
    )
    transport.start([], lambda message: None, lambda error: None)
    try:
        assert transport.subscribe_to_component_updates(lambda *e: heard.append(e)).result(5) == {}
        with pytest.raises(IpcRefusedError, match="ServiceError"):
            transport.subscribe_to_configuration_update([], lambda update: None).result(5)
        model = "ComponentUpdatePolicyEvents"
        pre = {"preUpdateEvent": {"deploymentId": "d-1", "isGgcRestarting": False}}
        server.send(_answer(1, model, pre))
        server.send(_answer(1, model, {"somethingNew": {}}))  # ignored
        assert _wait(lambda: len(heard) == 1, 5)
        # A new connection subscribes again, and only to what was not refused.
        server.drop()
        assert _wait(lambda: server.operations(2) == ["SubscribeToComponentUpdates"], 5)
        server.send(_answer(1, model, {"postUpdateEvent": {"deploymentId": "d-1"}}))
        assert _wait(lambda: len(heard) == 2, 5)
    finally:
        transport.close(1)
        server.close()
    assert server.operations(1) == ["SubscribeToComponentUpdates", "SubscribeToConfigurationUpdate"]
    assert heard == [
        ("preUpdateEvent", {"deploymentId": "d-1", "isGgcRestarting": False}),
        ("postUpdateEvent", {"deploymentId": "d-1"}),
    ]


def _has_awsiotsdk() -> bool:
    try:
        import awsiot.greengrasscoreipc  # noqa: F401
    except ImportError:
        return False
    return True

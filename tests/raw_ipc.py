"""A frame-level Greengrass IPC client for comparing servers byte for byte: what it sends is
exactly what the awsiotsdk client sends, and it keeps every frame it receives as the bytes that
came off the socket. Standard library plus the project's event-stream codec only."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeboost.runtime.eventstream import (
    PRELUDE_SIZE,
    Header,
    Message,
    MessageFlag,
    MessageType,
    decode_message,
    encode_message,
)

if TYPE_CHECKING:
    from edgeboost.broker import Broker

__all__ = ["Closed", "Frame", "RawIpc", "connected", "frame_bytes"]

PROTOCOL_VERSION = "0.1.0"


class Closed(ConnectionError):
    """The server closed the connection."""


@dataclass(frozen=True)
class Frame:
    """One frame as received: its wire bytes and what they decode to."""

    raw: bytes
    message: Message

    def header(self, name: str) -> Any:
        header = self.message.find(name)
        return None if header is None else header.value

    @property
    def type(self) -> int:
        return int(self.header(":message-type"))

    @property
    def flags(self) -> int:
        return int(self.header(":message-flags"))

    @property
    def stream_id(self) -> int:
        return int(self.header(":stream-id"))

    @property
    def model_type(self) -> str | None:
        value = self.header("service-model-type")
        return None if value is None else str(value)

    def json(self) -> Any:
        return json.loads(self.message.payload)


def frame_bytes(
    message_type: int,
    stream_id: int,
    *,
    flags: int = 0,
    headers: tuple[Header, ...] = (),
    payload: bytes = b"",
) -> bytes:
    """A client frame with the awsiotsdk client's header layout: its own headers, then routing."""
    routing = (
        Header.int32(":message-type", message_type),
        Header.int32(":message-flags", flags),
        Header.int32(":stream-id", stream_id),
    )
    return encode_message((*headers, *routing), payload)


class RawIpc:
    """One connection. ``connect()`` logs in; ``call()`` opens the next stream with a request;
    ``receive()`` returns frames in arrival order."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)
        self._buffer = bytearray()
        self._frames: list[Frame] = []
        self.next_stream_id = 1

    def __enter__(self) -> RawIpc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, token: str) -> Frame:
        """CONNECT with ``token``; the CONNECT_ACK (accepted or not)."""
        version = (Header.string(":version", PROTOCOL_VERSION),)
        payload = json.dumps({"authToken": token}).encode()
        self.send(frame_bytes(MessageType.CONNECT, 0, headers=version, payload=payload))
        return self.receive()

    def call(
        self, operation: str, request: dict[str, Any] | bytes, stream_id: int | None = None
    ) -> int:
        """Open a stream with ``operation``'s request (a dict, or the payload as given)."""
        if stream_id is None:
            stream_id = self.next_stream_id
        self.next_stream_id = stream_id + 1
        payload = request if isinstance(request, bytes) else json.dumps(request).encode()
        headers = (
            Header.string(":content-type", "application/json"),
            Header.string("service-model-type", f"{operation}Request"),
            Header.string("operation", operation),
        )
        self.send(
            frame_bytes(
                MessageType.APPLICATION_MESSAGE, stream_id, headers=headers, payload=payload
            )
        )
        return stream_id

    def receive(self, timeout: float | None = None) -> Frame:
        """The next frame; raises Closed when the server hung up, TimeoutError when none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._frames:
            if deadline is not None:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            except TimeoutError:  # socket.timeout
                raise TimeoutError("no frame arrived in time") from None
            if not data:
                raise Closed("the server closed the connection")
            self._buffer += data
            self._split()
        return self._frames.pop(0)

    def receive_on(self, stream_id: int, timeout: float = 5.0) -> Frame:
        """The next frame on ``stream_id``; frames on other streams are kept for later."""
        deadline = time.monotonic() + timeout
        skipped: list[Frame] = []
        try:
            while True:
                frame = self.receive(max(0.001, deadline - time.monotonic()))
                if frame.stream_id == stream_id:
                    return frame
                skipped.append(frame)
        finally:
            self._frames[:0] = skipped

    def nothing_arrives(self, within: float) -> bool:
        try:
            self.receive(within)
        except TimeoutError:
            return True
        return False

    def closed_by_server(self, within: float = 5.0) -> bool:
        """Whether the server hangs up within ``within`` seconds (frames before that are read)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                self.receive(max(0.001, deadline - time.monotonic()))
            except Closed:
                return True
            except TimeoutError:
                return False
        return False

    def _split(self) -> None:
        # By hand rather than with FrameDecoder, so each frame's exact bytes are kept.
        while len(self._buffer) >= PRELUDE_SIZE:
            total = int.from_bytes(self._buffer[:4], "big")
            if len(self._buffer) < total:
                return
            raw = bytes(self._buffer[:total])
            del self._buffer[:total]
            self._frames.append(Frame(raw, decode_message(raw)))


def connected(broker: Broker, token: str) -> RawIpc:
    """A connection to ``broker``, logged in with ``token`` (the test fails if refused)."""
    client = RawIpc(str(broker.socket_path))
    assert client.connect(token).flags == MessageFlag.CONNECTION_ACCEPTED
    return client

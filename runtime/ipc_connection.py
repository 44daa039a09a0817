"""One Greengrass IPC connection, standard library only: the client half of event-stream RPC,
frame for frame as the awsiotsdk V2 client speaks it (``tests/test_ipc_client.py`` compares
them header by header).

A connection is a Unix socket, a CONNECT with the component's token answered by CONNECT_ACK,
then streams: each call opens the next stream id with a request whose first answer is the
response (or a modelled error); a subscription's stream then carries events until either side
terminates it.

Threads: any thread may ``call`` or ``terminate`` (writes, stream ids included, are
serialised by a lock, so ids reach the wire in order); one thread runs ``pump``, which reads,
answers the server's PINGs, completes futures and runs stream callbacks. A send that blocks
for ``call_timeout_s`` (the server stopped reading) breaks the connection.
"""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from .eventstream import FrameDecoder, FrameError, Header, Message, MessageFlag, MessageType
from .eventstream import encode_message as encode
from .exceptions import IpcError, IpcNotSentError, IpcRefusedError, IpcUnconfirmedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "SERVICE",
    "ClosedByServer",
    "ConnectionLost",
    "IpcConnection",
    "binary_publish_request",
    "received_message",
]

SERVICE = "aws.greengrass"
_VERSION = "0.1.0"  # the event-stream RPC protocol version awsiotsdk sends
_READ_SIZE = 64 * 1024


class ConnectionLost(IpcError):
    """The connection closed or broke; whatever was in flight is unconfirmed."""


class ClosedByServer(ConnectionLost):
    """The server ended the connection (end of stream)."""


class _Stream:
    """One open operation: its response, and for a subscription its callbacks."""

    __slots__ = ("answered", "deadline", "on_closed", "on_event", "operation", "response", "topic")

    def __init__(
        self,
        operation: str,
        response: Future[dict[str, Any]],
        deadline: float,
        topic: str | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.operation, self.response, self.deadline = operation, response, deadline
        self.topic, self.on_event, self.on_closed = topic, on_event, on_closed
        self.answered = False


class IpcConnection:
    """Thread-safe as described in the module docstring."""

    def __init__(self, sock: socket.socket, *, call_timeout_s: float) -> None:
        self._socket = sock
        self._call_timeout_s = call_timeout_s
        self._decoder = FrameDecoder()
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._next_stream = 1
        self._closed = False
        self._backlog: list[Message] = []  # frames that came with the CONNECT_ACK
        self._broken: ConnectionLost | None = None  # raised once the frames before it are in

    # --- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, socket_path: str, token: str, *, call_timeout_s: float) -> IpcConnection:
        """Connect and log in; IpcRefusedError when the server refuses the token."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(call_timeout_s)
            sock.connect(socket_path)
            sock.settimeout(None)
            # Blocking sends, but never forever: a server that stops reading breaks the link.
            seconds = int(call_timeout_s)
            sock.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_SNDTIMEO,
                struct.pack("ll", seconds, int((call_timeout_s - seconds) * 1e6)),
            )
        except BaseException:
            sock.close()
            raise
        connection = cls(sock, call_timeout_s=call_timeout_s)
        try:
            connection._login(token)
        except BaseException:
            connection.close()
            raise
        return connection

    def _login(self, token: str) -> None:
        headers = [
            Header.string(":version", _VERSION),
            *_routing(MessageType.CONNECT, 0, 0),
        ]
        self._send(encode(headers, json.dumps({"authToken": token}).encode()))
        deadline = time.monotonic() + self._call_timeout_s
        while time.monotonic() < deadline:
            try:
                messages = self._read(deadline - time.monotonic())
            except ClosedByServer as exc:
                # Nucleus lite answers an unknown (or, after its restart, forgotten) token by
                # closing the connection; the Java Nucleus with a CONNECT_ACK that refuses.
                raise IpcRefusedError("ConnectionClosed", "CONNECT", _refused_token()) from exc
            if messages:
                first, self._backlog = messages[0], messages[1:]
                if _int(first, ":message-type") != MessageType.CONNECT_ACK:
                    raise ConnectionLost("the first frame from the server is not a CONNECT_ACK")
                if _int(first, ":message-flags") & MessageFlag.CONNECTION_ACCEPTED:
                    return
                raise IpcRefusedError("AccessDenied", "CONNECT", _refused_token())
        raise TimeoutError(f"no CONNECT_ACK within {self._call_timeout_s} s")

    # --- calls -------------------------------------------------------------------------------
    def call(
        self,
        operation: str,
        request: dict[str, Any],
        *,
        topic: str | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> tuple[int, Future[dict[str, Any]]]:
        """Open a stream with ``request``; (stream id, future of the response document).

        The future fails with IpcNotSentError (nothing reached the socket), IpcRefusedError
        (a modelled error) or IpcUnconfirmedError (no answer in time, or the connection
        closed after the request was sent)."""
        response: Future[dict[str, Any]] = Future()
        stream = _Stream(
            operation,
            response,
            time.monotonic() + self._call_timeout_s,
            topic,
            on_event,
            on_closed,
        )
        with self._send_lock:
            if self._closed:
                response.set_exception(IpcNotSentError("the IPC connection is closed"))
                return 0, response
            stream_id = self._next_stream
            self._next_stream += 1
            headers = [
                Header.string(":content-type", "application/json"),
                Header.string("service-model-type", f"{SERVICE}#{operation}Request"),
                *_routing(MessageType.APPLICATION_MESSAGE, 0, stream_id),
                Header.string("operation", f"{SERVICE}#{operation}"),
            ]
            self._streams[stream_id] = stream
            try:
                self._socket.sendall(encode(headers, json.dumps(request).encode()))
            except (OSError, FrameError) as exc:
                del self._streams[stream_id]
                # A partial frame is discarded by the server when the connection closes.
                self._shutdown()
                response.set_exception(IpcNotSentError(f"the request was not sent: {exc!r}"))
        return stream_id, response

    def terminate(self, stream_id: int) -> None:
        """Close a stream from our side (unsubscribe); nothing is awaited."""
        with self._send_lock:
            stream = self._streams.pop(stream_id, None)
        if stream is not None:
            with contextlib.suppress(OSError):  # the connection is going anyway
                self._send(encode(_routing(MessageType.APPLICATION_MESSAGE, 2, stream_id)))

    # --- the reading thread ------------------------------------------------------------------
    def pump(self, timeout: float) -> None:
        """Read for up to ``timeout`` seconds and dispatch what arrived; expire late answers.
        Raises ConnectionLost when the connection ends."""
        backlog, self._backlog = self._backlog, []
        for message in backlog + self._read(timeout):
            self._dispatch(message)
        self._expire(time.monotonic())

    def _read(self, timeout: float) -> list[Message]:
        """The frames that arrive within ``timeout``; the frames before a corrupt one or the
        end of the stream are returned first, and ConnectionLost is raised on the next call."""
        if self._broken is not None:
            raise self._broken
        try:
            readable, _, _ = select.select([self._socket], [], [], max(0.0, timeout))
            if not readable:
                return []
            data = self._socket.recv(_READ_SIZE)
        except (OSError, ValueError) as exc:  # ValueError: select on a closed socket
            raise ConnectionLost(f"reading from the IPC server failed: {exc!r}") from None
        if not data:
            raise ClosedByServer("the IPC server closed the connection")
        messages: list[Message] = []
        try:
            messages.extend(self._decoder.frames(data))
        except FrameError as exc:
            self._broken = ConnectionLost(f"the IPC server sent a malformed frame: {exc}")
            if not messages:
                raise self._broken from None
        return messages

    def _dispatch(self, message: Message) -> None:
        kind = _int(message, ":message-type")
        if kind == MessageType.PING:
            self._send(encode(_routing(MessageType.PING_RESPONSE, 0, 0), message.payload))
        elif kind in (MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR):
            self._stream_message(message, kind == MessageType.APPLICATION_ERROR)
        elif kind in (MessageType.PROTOCOL_ERROR, MessageType.INTERNAL_ERROR):
            raise ConnectionLost(f"the IPC server reported a connection error: {message.payload!r}")
        # PING_RESPONSE and anything else: nothing to do.

    def _stream_message(self, message: Message, is_error: bool) -> None:
        stream_id = _int(message, ":stream-id")
        ends = is_error or bool(_int(message, ":message-flags") & MessageFlag.TERMINATE_STREAM)
        with self._send_lock:
            stream = self._streams.get(stream_id)
            if stream is not None and ends:
                del self._streams[stream_id]
        if stream is None:
            return  # a stream we closed, or never opened: stale
        document = _document(message.payload) if message.payload else {}
        if not stream.answered:  # the first message on a stream is the response
            stream.answered = True
            if is_error:
                model = message.find("service-model-type")
                stream.response.set_exception(_refusal(model, stream, document))
            else:
                stream.response.set_result(document)
            return
        if message.payload and not is_error and stream.on_event is not None:
            stream.on_event(document)
        if ends and stream.on_closed is not None:
            stream.on_closed()

    def _expire(self, now: float) -> None:
        with self._send_lock:
            late = [
                (stream_id, s)
                for stream_id, s in self._streams.items()
                if not s.answered and s.deadline <= now
            ]
            for stream_id, _ in late:
                del self._streams[stream_id]
        for _, stream in late:
            stream.response.set_exception(
                IpcUnconfirmedError(f"no answer to {stream.operation} in {self._call_timeout_s} s")
            )

    # --- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the socket; what awaited an answer fails as unconfirmed. Idempotent."""
        with self._send_lock:
            self._closed = True
            streams, self._streams = self._streams, {}
        self._shutdown()
        self._socket.close()
        for stream in streams.values():  # open subscriptions end with the connection, unasked
            if not stream.answered:
                stream.response.set_exception(
                    IpcUnconfirmedError(f"the connection closed before {stream.operation}'s answer")
                )

    def abort(self) -> None:
        """Make the reading thread's ``pump`` raise ConnectionLost; that thread then closes."""
        self._shutdown()

    def _shutdown(self) -> None:
        """Wake the reading thread (select sees EOF) without closing the descriptor under it."""
        with contextlib.suppress(OSError):  # not connected (any more)
            self._socket.shutdown(socket.SHUT_RDWR)

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            self._socket.sendall(frame)


# --- request and event shapes ---------------------------------------------------------------
def binary_publish_request(topic: str, payload: bytes) -> dict[str, Any]:
    return {
        "topic": topic,
        "publishMessage": {"binaryMessage": {"message": base64.b64encode(payload).decode()}},
    }


def received_message(event: dict[str, Any]) -> tuple[str, Any] | None:
    """(topic, payload) of a SubscribeToTopic event: bytes for a binaryMessage, the decoded
    document for a jsonMessage; None for an event with neither."""
    if isinstance(event.get("binaryMessage"), dict):
        inner = event["binaryMessage"]
        try:
            payload: Any = base64.b64decode(inner.get("message") or "", validate=True)
        except (ValueError, TypeError):
            payload = str(inner.get("message")).encode()  # Lite passes non-base64 through
    elif isinstance(event.get("jsonMessage"), dict):
        inner = event["jsonMessage"]
        payload = inner.get("message")
    else:
        return None
    context = inner.get("context")
    topic = context.get("topic") if isinstance(context, dict) else None
    return (topic if isinstance(topic, str) else ""), payload


def _routing(kind: MessageType, flags: int, stream_id: int) -> list[Header]:
    return [
        Header.int32(":message-type", int(kind)),
        Header.int32(":message-flags", flags),
        Header.int32(":stream-id", stream_id),
    ]


def _int(message: Message, name: str) -> int:
    header = message.find(name)
    if header is None or not isinstance(header.value, int) or isinstance(header.value, bool):
        raise ConnectionLost(f"the IPC server sent a frame without an integer {name}")
    return header.value


def _document(payload: bytes) -> dict[str, Any]:
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise ConnectionLost(f"the IPC server sent a payload that is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConnectionLost("the IPC server sent a payload that is not a JSON object")
    return document


def _refusal(model: Header | None, stream: _Stream, document: dict[str, Any]) -> IpcRefusedError:
    error = str(model.value).rpartition("#")[2] if model is not None else ""
    error = error or "UnknownError"
    text = document.get("message") or document.get("_message") or "no message"
    return IpcRefusedError(error, stream.operation, str(text), topic=stream.topic)


def _refused_token() -> str:
    return (
        "the IPC server refused the token in SVCUID; a component gets its token from the "
        "Nucleus that starts it"
    )

"""One client connection: the CONNECT handshake, stream bookkeeping and frame routing.

Connection-level rules follow aws-c-event-stream's RPC server (which the Nucleus runs on):
CONNECT first and only once, new stream ids go up by one, a new stream names its operation,
and any violation gets a PROTOCOL_ERROR followed by closing the connection. A corrupt or
oversized frame, or a missed login or frame deadline (see :mod:`framereader`), closes the
connection without a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from edgeboost.broker import rpc
from edgeboost.broker.budget import ByteBudget
from edgeboost.broker.component_updates import ComponentUpdates, UpdateListener
from edgeboost.broker.configuration import ConfigStore, ConfigWatch
from edgeboost.broker.context import OperationContext, Reply
from edgeboost.broker.errors import IpcError, MalformedRequest, ServiceError
from edgeboost.broker.framereader import FrameReader, ReadTimeout
from edgeboost.broker.limits import Limits
from edgeboost.broker.messages import auth_token, parse_request
from edgeboost.broker.operations import OPERATIONS
from edgeboost.broker.policy import ComponentPolicy
from edgeboost.broker.pubsub import PubSubHub, Subscription
from edgeboost.broker.states import ComponentStates
from edgeboost.runtime.eventstream import FrameError, Message, MessageFlag, MessageType

__all__ = ["ClientSession", "SessionOptions"]

logger = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024
_session_numbers = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Broker-wide settings every session shares."""

    components: Mapping[str, ComponentPolicy]  # by auth token (SVCUID)
    hub: PubSubHub
    config: ConfigStore
    states: ComponentStates
    updates: ComponentUpdates
    numbers_as_doubles: bool
    limits: Limits
    read_budget: ByteBudget  # for frames still arriving, shared by all sessions


class ClientSession:
    """Serves one accepted connection until the peer leaves, breaks the protocol, or the broker
    stops. Outgoing frames go through a bounded queue drained by a writer task, so nothing that
    happens on this connection can block another one."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, options: SessionOptions
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._options = options
        self._frames = FrameReader(reader, options.read_budget, options.limits)
        self._number = next(_session_numbers)
        self._component: ComponentPolicy | None = None
        self._last_stream_id = 0
        self._streams: dict[int, Subscription] = {}  # open SubscribeToTopic streams
        self._watches: dict[int, ConfigWatch] = {}  # open SubscribeToConfigurationUpdate streams
        self._listeners: dict[int, UpdateListener] = {}  # open SubscribeToComponentUpdates ones
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0  # in _pending; the transport's own buffer is counted apart
        self._wakeup = asyncio.Event()
        self._closing = False  # stop reading, flush what is queued, then close
        self._aborted = False  # drop everything and close now
        self._rejected = False  # CONNECT refused: wait (briefly) for the client to hang up

    def __str__(self) -> str:
        who = self._component.name if self._component else "unauthenticated"
        return f"client#{self._number} ({who})"

    async def run(self) -> None:
        writer_task = asyncio.create_task(self._write_loop(), name=f"{self} writer")
        try:
            await self._read_loop()
            await self._finish(writer_task)
        finally:
            # Synchronous part first: it must all happen even if the broker cancels us below.
            self._drop_subscriptions()
            self._frames.close()
            writer_task.cancel()
            self._writer.close()
            logger.info("%s: disconnected", self)
            await asyncio.gather(writer_task, return_exceptions=True)
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def _finish(self, writer_task: asyncio.Task[None]) -> None:
        """Let a final CONNECT_ACK or PROTOCOL_ERROR reach the peer before closing."""
        self._closing = True
        self._wakeup.set()
        timeout = self._options.limits.flush_timeout
        try:
            await asyncio.wait_for(asyncio.shield(writer_task), timeout)
        except asyncio.TimeoutError:
            logger.warning("%s: last frames not taken within %.1f s", self, timeout)
            return
        if self._rejected:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._discard_until_eof(), timeout)

    # -- outgoing -----------------------------------------------------------------------------

    def send_stream_event(self, stream_id: int, model_type: str, payload: bytes) -> bool:
        """Queue an event on an open stream (called during fan-out, with configuration changes
        and component updates); False when the stream is not open or the frame cannot be
        made."""
        if not self._is_open(stream_id):
            return False
        try:
            frame = rpc.application_message(stream_id, model_type, payload, terminate=False)
        except FrameError as exc:
            # The Nucleus fails such a send on its own; the publisher still gets its response.
            logger.warning("%s: event on stream %d not sent: %s", self, stream_id, exc)
            return False
        self._enqueue(frame)
        return not self._aborted

    def _is_open(self, stream_id: int) -> bool:
        return (
            stream_id in self._streams
            or stream_id in self._watches
            or (stream_id in self._listeners)
        )

    def _enqueue(self, frame: bytes) -> None:
        if self._aborted:
            return
        limits = self._options.limits
        unsent = self._pending_bytes + self._writer.transport.get_write_buffer_size()
        if len(self._pending) >= limits.max_pending_frames:
            self._abort(
                f"{len(self._pending)} frames waiting to be read; the client is too slow or stuck"
            )
            return
        if unsent + len(frame) > limits.max_pending_bytes:
            self._abort(f"{unsent} bytes waiting to be read; the client is too slow or stuck")
            return
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                while self._pending:
                    frame = self._pending.popleft()
                    self._pending_bytes -= len(frame)
                    self._writer.write(frame)
                await self._writer.drain()
                if self._closing and not self._pending:
                    return
                if not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
        except OSError as exc:
            self._abort(f"write failed: {exc}")

    def _abort(self, reason: str) -> None:
        if self._aborted:
            return
        logger.warning("%s: closing: %s", self, reason)
        self._aborted = self._closing = True
        self._pending.clear()
        self._pending_bytes = 0
        self._drop_subscriptions()  # stop fan-out to this client right away
        self._writer.transport.abort()
        self._wakeup.set()

    # -- incoming -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self._closing:
            try:
                messages = await self._frames.read()
            except OSError as exc:
                logger.info("%s: read failed: %s", self, exc)
                return
            except FrameError as exc:
                logger.warning("%s: bad frame, closing the connection: %s", self, exc)
                return
            except ReadTimeout as exc:
                logger.warning("%s: closing the connection: %s", self, exc)
                return
            if not messages:
                return
            for message in messages:
                self._route(message)
                if self._closing:
                    return

    def _route(self, message: Message) -> None:
        try:
            meta = rpc.read_metadata(message)
        except rpc.ProtocolViolation as exc:
            self._protocol_error(str(exc))
            return
        if self._component is None:
            if meta.message_type != MessageType.CONNECT or meta.stream_id != 0:
                self._protocol_error("the first message must be a CONNECT on stream 0")
            else:
                self._on_connect(message)
        elif meta.stream_id != 0:
            self._on_stream_frame(message, meta)
        elif meta.message_type == MessageType.PING:
            self._enqueue(rpc.ping_response(message))
        elif meta.message_type == MessageType.CONNECT:
            self._protocol_error("only one CONNECT is allowed per connection")
        elif meta.message_type != MessageType.PING_RESPONSE:
            self._protocol_error(f"message type {meta.message_type} is not valid on stream 0")

    def _on_connect(self, message: Message) -> None:
        version = message.find(rpc.VERSION)
        if version is None or version.value != rpc.PROTOCOL_VERSION:
            shown = version.value if version else None
            logger.warning(
                "%s: CONNECT with :version %r, expected %r", self, shown, rpc.PROTOCOL_VERSION
            )
            self._reject_connect()
            return
        token = auth_token(message.payload)
        component = self._options.components.get(token) if token else None
        if component is None:
            logger.warning("%s: CONNECT with an unknown or missing authToken", self)
            self._reject_connect()
            return
        self._component = component
        self._frames.logged_in()
        self._enqueue(rpc.connect_ack(accepted=True))
        logger.info("%s: connected", self)

    def _reject_connect(self) -> None:
        self._enqueue(rpc.connect_ack(accepted=False))
        self._closing = True
        # The Nucleus closes at once, and then the awsiotsdk client may report the closed
        # socket instead of AccessDeniedError. Letting the client hang up first (it does so on
        # a refusal) makes the refusal the error it sees.
        self._rejected = True

    async def _discard_until_eof(self) -> None:
        with contextlib.suppress(OSError):
            while await self._reader.read(_READ_SIZE):
                pass

    def _on_stream_frame(self, message: Message, meta: rpc.RpcMetadata) -> None:
        if meta.message_type not in (
            MessageType.APPLICATION_MESSAGE,
            MessageType.APPLICATION_ERROR,
        ):
            self._protocol_error("a non-zero stream id is only allowed on application messages")
            return
        stream_id = meta.stream_id
        terminate = bool(meta.flags & MessageFlag.TERMINATE_STREAM)
        if stream_id <= self._last_stream_id:
            self._on_existing_stream(stream_id, terminate)
        elif stream_id != self._last_stream_id + 1:
            self._protocol_error(
                f"new stream id {stream_id} skips ids after {self._last_stream_id}"
            )
        elif not meta.operation:
            self._protocol_error(f"new stream {stream_id} has no operation header")
        else:
            self._last_stream_id = stream_id
            self._start_operation(stream_id, meta.operation, message, terminate)

    def _on_existing_stream(self, stream_id: int, terminate: bool) -> None:
        if not self._is_open(stream_id):
            if not terminate:  # a late TERMINATE after we closed the stream is normal
                self._protocol_error(f"stream {stream_id} is not open")
            return
        self._close_stream(stream_id)
        if terminate:
            logger.debug("%s: client closed stream %d", self, stream_id)
        else:
            # No operation here accepts stream events; the Nucleus fails them and ends the stream.
            logger.warning("%s: unexpected event on stream %d; ending it", self, stream_id)
            self._enqueue(rpc.internal_server_error(stream_id))

    def _start_operation(
        self, stream_id: int, operation: str, message: Message, terminate: bool
    ) -> None:
        reply = self._call_handler(stream_id, operation, message)
        if reply is None:
            return
        if reply.error is not None:
            self._log_error(operation, reply.error)
            self._enqueue(_error_frame(stream_id, reply.error))
            self._then(reply, operation, stream_id)
            return
        opens = any(x is not None for x in (reply.subscription, reply.watch, reply.listener))
        keep_open = opens and not terminate
        payload = rpc.dump_json(reply.payload)
        self._enqueue(
            rpc.application_message(stream_id, reply.model_type, payload, terminate=not keep_open)
        )
        self._then(reply, operation, stream_id)
        # Register only after the response is queued: the response must be the stream's first frame.
        if not keep_open or self._aborted:
            return
        if reply.subscription is not None:
            self._streams[stream_id] = reply.subscription
            self._options.hub.add(reply.subscription)
            logger.debug(
                "%s: stream %d subscribed to %s", self, stream_id, reply.subscription.topic_filter
            )
        if reply.watch is not None:
            self._watches[stream_id] = reply.watch
            self._options.config.attach(reply.watch)
            logger.debug(
                "%s: stream %d watches the configuration of %s",
                self,
                stream_id,
                reply.watch.component,
            )
        if reply.listener is not None:
            self._listeners[stream_id] = reply.listener
            self._options.updates.add(reply.listener)
            logger.debug("%s: stream %d listens for component updates", self, stream_id)

    def _then(self, reply: Reply, operation: str, stream_id: int) -> None:
        if reply.then is None:
            return
        try:
            reply.then()
        except Exception:  # the reply is out: a bug here must not end the connection
            logger.exception(
                "%s: %s on stream %d failed after its reply", self, operation, stream_id
            )

    def _log_error(self, operation: str, error: IpcError) -> None:
        logger.info("%s: %s failed: %s: %s", self, operation, error.error_code, error.message)

    def _call_handler(self, stream_id: int, operation: str, message: Message) -> Reply | None:
        """Run the operation. On failure queue the error frame the Nucleus would send (which
        ends the stream) and return None."""
        assert self._component is not None
        handler = OPERATIONS.get(operation)
        try:
            if handler is None:
                raise ServiceError(f"Unsupported operation {operation}")
            context = OperationContext(
                self._component,
                self._options.hub,
                self._options.config,
                self._options.states,
                self._options.updates,
                self,
                stream_id,
                self._options.numbers_as_doubles,
            )
            return handler(context, parse_request(message.payload))
        except IpcError as exc:
            self._log_error(operation, exc)
            frame = _error_frame(stream_id, exc)
        except MalformedRequest as exc:
            logger.warning(
                "%s: %s: %s (the client only sees InternalServerError)", self, operation, exc
            )
            frame = rpc.internal_server_error(stream_id)
        except Exception as exc:  # a bug here must not take the whole connection down
            logger.exception("%s: %s crashed", self, operation)
            frame = _error_frame(stream_id, ServiceError(f"{type(exc).__name__}: {exc}"))
        self._enqueue(frame)
        return None

    def _protocol_error(self, text: str) -> None:
        logger.warning("%s: protocol error, closing: %s", self, text)
        self._enqueue(rpc.connection_error(text))
        self._closing = True

    # -- streams ------------------------------------------------------------------------------

    def _close_stream(self, stream_id: int) -> None:
        subscription = self._streams.pop(stream_id, None)
        if subscription is not None:
            self._options.hub.remove(subscription)
        watch = self._watches.pop(stream_id, None)
        if watch is not None:
            self._options.config.detach((watch,))
        listener = self._listeners.pop(stream_id, None)
        if listener is not None:
            self._options.updates.remove([listener])

    def _drop_subscriptions(self) -> None:
        # One batch: removing them one by one used to rebuild the hub's view each time.
        self._options.hub.remove_all(self._streams.values())
        self._streams.clear()
        self._options.config.detach(self._watches.values())
        self._watches.clear()
        self._options.updates.remove(list(self._listeners.values()))
        self._listeners.clear()


def _error_frame(stream_id: int, error: IpcError) -> bytes:
    return rpc.application_error(stream_id, error.model_type(), rpc.dump_json(error.payload()))

"""Greengrass IPC transport through awsiotsdk: the only module that imports it.

The V2 client does not reconnect by itself. A supervisor thread watches the connection (the
lifecycle handler's on_disconnect, and subscription streams that close) and rebuilds the
client and the subscriptions with exponential back-off. Only a closed connection counts as
lost: a modelled error (UnauthorizedError, ServiceError...) is an answer on a working
connection, and a publish that fails while a reconnect is under way must not tear the new
connection down (that turned one stall into thousands of reconnects).

Every call has a timeout: connect and subscribe wait at most ``call_timeout_s``; a publish
that gets no answer within it ends as IpcUnconfirmedError (the supervisor sweeps them).
Stream callbacks run on the client's network thread (``executor=None``): they only hand the
message to ``deliver``, which never blocks and never calls IPC.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from .exceptions import (
    EdgeboostError,
    IpcError,
    IpcNotSentError,
    IpcRefusedError,
    IpcUnconfirmedError,
)
from .transport import (
    TOKEN_ENV,
    Message,
    component_identity,
    refusal_is_final,
    subscribe_advice,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["GreengrassTransport"]

_log = logging.getLogger(__name__)


def _sdk() -> Any:
    try:
        import awscrt.eventstream.rpc  # noqa: F401  (the SDK's transport)
        import awsiot.eventstreamrpc
        import awsiot.greengrasscoreipc.client
        import awsiot.greengrasscoreipc.clientv2
        import awsiot.greengrasscoreipc.model
    except ImportError as exc:
        raise EdgeboostError(
            "serving over Greengrass IPC needs awsiotsdk: pip install awsiotsdk "
            "(or pip install 'edgeboost[greengrass]')"
        ) from exc
    return awsiot


class GreengrassTransport:
    """Subscribe once, stay subscribed, publish replies. Thread-safe."""

    def __init__(
        self,
        *,
        socket_path: str | None = None,
        auth_token: str | None = None,
        call_timeout_s: float = 5.0,
        start_timeout_s: float = 4.0,
        backoff_s: tuple[float, float] = (0.05, 1.0),
    ) -> None:
        self._awsiot = _sdk()
        self._socket_path, self._auth_token = socket_path or "", auth_token or ""
        self._call_timeout_s = call_timeout_s
        self._start_timeout_s = start_timeout_s
        self._backoff_s = backoff_s
        self._lock = threading.Lock()
        self._client: Any = None
        self._connection: Any = None
        self._operations: list[Any] = []
        self._topics: list[str] = []
        self._deliver: Callable[[Message], None] | None = None
        self._on_fatal: Callable[[Exception], None] = lambda _: None
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._closing = threading.Event()
        self._receiving = True
        self._generation = 0
        self._reconnects = 0
        self._pending: dict[int, tuple[float, Future[None]]] = {}
        self._publish_ids = itertools.count()
        self._supervisor: threading.Thread | None = None

    # --- Transport ---------------------------------------------------------------------------
    @property
    def reconnects(self) -> int:
        return self._reconnects

    def start(
        self,
        topics: Sequence[str],
        deliver: Callable[[Message], None],
        on_fatal: Callable[[Exception], None],
    ) -> None:
        self._socket_path, self._auth_token = component_identity(
            self._socket_path, self._auth_token
        )
        self._topics, self._deliver, self._on_fatal = list(topics), deliver, on_fatal
        self._connect_with_backoff(give_up_at=time.monotonic() + self._start_timeout_s)
        self._supervisor = threading.Thread(
            target=self._supervise, name="edgeboost-ipc-supervisor", daemon=True
        )
        self._supervisor.start()

    def publish(self, topic: str, payload: bytes) -> Future[None]:
        result: Future[None] = Future()
        client = self._client
        if client is None or self._closing.is_set():
            result.set_exception(IpcNotSentError("not connected to the IPC server"))
            return result
        model = self._awsiot.greengrasscoreipc.model
        request = model.PublishToTopicRequest(
            topic=topic,
            publish_message=model.PublishMessage(
                binary_message=model.BinaryMessage(message=payload)
            ),
        )
        try:
            operation = client.client.new_publish_to_topic()
            written = operation.activate(request)
        except Exception as exc:  # ConnectionClosedError: the stream was never opened
            result.set_exception(IpcNotSentError(f"not connected: {exc!r}"))
            return result
        key = next(self._publish_ids)
        with self._lock:
            self._pending[key] = (time.monotonic() + self._call_timeout_s, result)
        written.add_done_callback(lambda done: self._on_written(key, done))
        operation.get_response().add_done_callback(lambda done: self._on_answer(key, topic, done))
        return result

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop_receiving(self, timeout: float) -> None:
        with self._lock:
            self._receiving = False
            operations, self._operations = self._operations, []
        closing = []
        for operation in operations:
            try:
                closing.append(operation.close())
            except Exception as exc:  # already closed with the connection
                _log.debug("closing a subscription: %s", exc)
        _wait_all(closing, time.monotonic() + timeout)

    def close(self, timeout: float) -> None:
        self._closing.set()
        self._lost.set()  # wakes the supervisor, which then ends
        self._close_client(timeout)
        self._fail_pending(lambda: IpcUnconfirmedError("the IPC client was closed"))

    # --- publish outcomes: called on the network thread ------------------------------------
    def _on_written(self, key: int, done: Future[Any]) -> None:
        error = done.exception()
        if error is not None:  # never reached the socket: a resend cannot duplicate it
            self._settle(key, IpcNotSentError(f"the write failed: {error!r}"))

    def _on_answer(self, key: int, topic: str, done: Future[Any]) -> None:
        error = done.exception()
        if error is None:
            self._settle(key, None)
        elif isinstance(error, self._awsiot.eventstreamrpc.ErrorShape):
            self._settle(
                key,
                IpcRefusedError(type(error).__name__, "PublishToTopic", _text(error), topic=topic),
            )
        else:
            self._settle(key, IpcUnconfirmedError(f"no answer to a publish: {error!r}"))

    def _settle(self, key: int, error: Exception | None) -> None:
        with self._lock:
            entry = self._pending.pop(key, None)
        if entry is None:
            return  # already settled (a write failure, then the response's failure)
        if error is None:
            entry[1].set_result(None)
        else:
            entry[1].set_exception(error)

    def _fail_pending(self, error: Callable[[], Exception], *, expired_only: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            keys = [k for k, (due, _) in self._pending.items() if not expired_only or due <= now]
        for key in keys:
            self._settle(key, error())

    # --- connection management ---------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._closing.is_set():
            if self._lost.wait(0.25) and not self._closing.is_set():
                _log.warning("IPC connection lost; reconnecting")
                self._close_client(self._call_timeout_s)
                try:
                    self._connect_with_backoff(give_up_at=None)
                except IpcError as exc:  # refused: a recipe or token problem, not a fault
                    self._on_fatal(exc)
                    return
                self._reconnects += 1
            self._fail_pending(
                lambda: IpcUnconfirmedError(f"no answer within {self._call_timeout_s} s"),
                expired_only=True,
            )

    def _connect_with_backoff(self, *, give_up_at: float | None) -> None:
        """Connect and subscribe; retry faults with back-off, raise a final refusal at once."""
        delay, ceiling = self._backoff_s
        closed_in_a_row = 0
        while not self._closing.is_set():
            try:
                self._connect_and_subscribe()
                return
            except Exception as exc:
                closed = isinstance(exc, IpcRefusedError) and exc.error == "ConnectionClosed"
                closed_in_a_row = closed_in_a_row + 1 if closed else 0
                if isinstance(exc, IpcRefusedError) and refusal_is_final(exc, closed_in_a_row):
                    raise
                if give_up_at is not None and time.monotonic() + delay > give_up_at:
                    raise IpcError(
                        f"cannot reach the Greengrass IPC server at {self._socket_path}: "
                        f"{_text(exc)}"
                    ) from exc
                _log.warning(
                    "cannot reach the IPC server at %s (%s); retrying in %.2f s",
                    self._socket_path,
                    _text(exc),
                    delay,
                )
                self._closing.wait(delay)
                delay = min(ceiling, delay * 2)

    def _connect_and_subscribe(self) -> None:
        awsiot = self._awsiot
        with self._lock:
            self._generation += 1
            generation = self._generation
            # Cleared before connecting, never after: a disconnect that happens while we
            # subscribe must stay visible to the supervisor.
            self._lost.clear()
        connection = self._connect(generation)
        client = awsiot.greengrasscoreipc.clientv2.GreengrassCoreIPCClientV2(
            client=awsiot.greengrasscoreipc.client.GreengrassCoreIPCClient(connection),
            executor=None,
        )
        operations = []
        try:
            if self._receiving:
                for topic in self._topics:
                    operations.append(self._subscribe(client, topic, generation))
        except Exception:
            connection.close()
            raise
        with self._lock:
            self._client, self._connection, self._operations = client, connection, operations
            self._connected.set()
        _log.info(
            "IPC connected to %s; subscribed to %s",
            self._socket_path,
            ", ".join(self._topics) if operations else "nothing",
        )

    def _connect(self, generation: int) -> Any:
        """ipc.connect() without its leak: a CONNECT that times out is closed, not abandoned."""
        from awscrt.io import (
            ClientBootstrap,
            DefaultHostResolver,
            EventLoopGroup,
            SocketDomain,
            SocketOptions,
        )

        rpc = self._awsiot.eventstreamrpc
        elg = EventLoopGroup(num_threads=1)
        options = SocketOptions()
        options.domain = SocketDomain.Local
        connection = rpc.Connection(
            host_name=self._socket_path,
            port=0,
            bootstrap=ClientBootstrap(elg, DefaultHostResolver(elg)),
            socket_options=options,
            connect_message_amender=rpc.MessageAmendment.create_static_authtoken_amender(
                self._auth_token
            ),
        )
        try:
            connection.connect(_Lifecycle(self, generation)).result(self._call_timeout_s)
        except FutureTimeout:
            connection.close()
            raise TimeoutError(f"no CONNECT_ACK within {self._call_timeout_s} s") from None
        except rpc.AccessDeniedError as exc:
            raise IpcRefusedError("AccessDenied", "CONNECT", _refused_token(exc)) from None
        except Exception as exc:
            # Nucleus lite answers an unknown (or, after its restart, forgotten) token by
            # closing the connection it accepted: awscrt reports that as a closed socket.
            if getattr(exc, "name", None) == "AWS_IO_SOCKET_CLOSED":
                raise IpcRefusedError("ConnectionClosed", "CONNECT", _refused_token(exc)) from None
            raise
        return connection

    def _subscribe(self, client: Any, topic: str, generation: int) -> Any:
        answer, operation = client.subscribe_to_topic_async(
            topic=topic,
            on_stream_event=self._on_event,
            on_stream_error=lambda error: self._on_stream_error(error, generation),
            on_stream_closed=lambda: self._on_stream_closed(generation),
        )
        try:
            answer.result(self._call_timeout_s)
        except FutureTimeout:
            raise TimeoutError(f"no answer to SubscribeToTopic {topic!r}") from None
        except self._awsiot.eventstreamrpc.ErrorShape as exc:
            raise IpcRefusedError(
                type(exc).__name__,
                "SubscribeToTopic",
                f"{_text(exc)}; {subscribe_advice(topic)}",
                topic=topic,
            ) from None
        return operation

    def _close_client(self, timeout: float) -> None:
        with self._lock:
            connection, self._connection, self._client = self._connection, None, None
            self._operations = []
            self._connected.clear()
        if connection is not None:
            try:
                connection.close().result(timeout)
            except Exception as exc:  # closed with an error, or slow: either way it is gone
                _log.debug("closing the IPC connection: %r", exc)

    def _connection_lost(self, generation: int) -> None:
        # Events of a connection we already replaced are stale.
        if generation == self._generation and not self._closing.is_set():
            self._connected.clear()
            self._lost.set()

    # --- stream callbacks: network thread ----------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if self._deliver is None:
            return
        if event.binary_message is not None:
            inner = event.binary_message
            payload: Any = bytes(inner.message or b"")
        elif event.json_message is not None:
            inner = event.json_message
            payload = inner.message
        else:
            return
        topic = inner.context.topic if inner.context is not None else ""
        self._deliver(Message(topic=topic, payload=payload))

    def _on_stream_error(self, error: Exception, generation: int) -> bool:
        _log.warning("subscription stream error: %s", _text(error))
        self._connection_lost(generation)
        return True

    def _on_stream_closed(self, generation: int) -> None:
        if self._receiving:
            self._connection_lost(generation)


class _Lifecycle:
    """awsiot.eventstreamrpc.LifecycleHandler, duck-typed so the import stays lazy."""

    def __init__(self, transport: GreengrassTransport, generation: int) -> None:
        self._transport, self._generation = transport, generation

    def on_connect(self) -> None:
        pass

    def on_disconnect(self, reason: Exception | None) -> None:
        _log.info("IPC disconnected: %s", _text(reason) if reason else "closed")
        self._transport._connection_lost(self._generation)

    def on_error(self, error: Exception) -> bool:
        _log.warning("IPC protocol error: %s", _text(error))
        return True

    def on_ping(self, headers: Any, payload: Any) -> None:
        pass


def _refused_token(error: BaseException) -> str:
    return (
        f"the IPC server refused the token in {TOKEN_ENV} ({_text(error)}); a component gets "
        "its token from the Nucleus that starts it"
    )


def _text(error: BaseException) -> str:
    """An error's own words: awsiotsdk's modelled errors keep them in ``message``."""
    message = getattr(error, "message", None)
    text = message if isinstance(message, str) and message else str(error)
    return text or type(error).__name__


def _wait_all(futures: list[Future[Any]], deadline: float) -> None:
    for future in futures:
        try:
            future.result(max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # a timeout or a close error: the stream is gone either way
            _log.debug("waiting for a stream to close: %r", exc)

"""The built-in Greengrass IPC transport: standard library only, one thread.

The device default. awsiotsdk's native core (awscrt) has no armv7 wheel, needs pip at install
and adds ~12 MB to the process; this transport needs nothing the runtime does not already
have. Its one thread connects, subscribes, reads, and reconnects with back-off when the
connection drops; replies are written by whichever thread publishes. Like the awsiotsdk
transport (``greengrass.py``): only a lost connection counts as lost, a modelled error is an
answer, and a refused token or subscription is fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from .exceptions import IpcError, IpcNotSentError, IpcRefusedError
from .ipc_connection import (
    ConnectionLost,
    IpcConnection,
    binary_publish_request,
    received_message,
)
from .transport import Message, component_identity, refusal_is_final, subscribe_advice

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["BuiltinTransport"]

_log = logging.getLogger(__name__)

_PUMP_S = 0.25  # how often the reading thread looks at the clock (late answers, closing)


class BuiltinTransport:
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
        self._socket_path, self._auth_token = socket_path or "", auth_token or ""
        self._call_timeout_s = call_timeout_s
        self._start_timeout_s = start_timeout_s
        self._backoff_s = backoff_s
        self._lock = threading.Lock()
        self._connection: IpcConnection | None = None
        self._subscriptions: dict[str, int] = {}  # topic -> stream id
        # Streams beyond the request topics (configuration, component updates): (operation,
        # request, event callback), opened again on every connection.
        self._watches: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], None]]] = []
        self._topics: list[str] = []
        self._deliver: Callable[[Message], None] = lambda message: None
        self._on_fatal: Callable[[Exception], None] = lambda error: None
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._started = threading.Event()
        self._start_error: Exception | None = None
        self._receiving = True
        self._reconnects = 0
        self._thread: threading.Thread | None = None

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
        self._thread = threading.Thread(target=self._run, name="edgeboost-ipc", daemon=True)
        self._thread.start()
        # The thread gives up by itself after start_timeout_s; the margin covers one call.
        self._started.wait(self._start_timeout_s + self._call_timeout_s * (len(topics) + 2))
        if self._start_error is not None:
            raise self._start_error
        if not self._started.is_set():
            raise IpcError(f"no connection to the Greengrass IPC server at {self._socket_path}")

    def publish(self, topic: str, payload: bytes) -> Future[None]:
        connection = self._connection
        if connection is None:
            failed: Future[None] = Future()
            failed.set_exception(IpcNotSentError("not connected to the IPC server"))
            return failed
        _, response = connection.call(
            "PublishToTopic", binary_publish_request(topic, payload), topic=topic
        )
        done: Future[None] = Future()
        response.add_done_callback(lambda answer: _settle(done, answer))
        return done

    # --- component lifecycle and configuration (beyond the Transport protocol) ----------------
    def update_state(self, state: str) -> Future[dict[str, Any]]:
        """Report the component's state to the Nucleus (``RUNNING``, ``ERRORED``)."""
        return self._call("UpdateState", {"state": state})

    def get_configuration(
        self, key_path: Sequence[str], *, component: str | None = None
    ) -> Future[dict[str, Any]]:
        """The component's configuration below ``key_path``: ``{"componentName", "value"}``."""
        request: dict[str, Any] = {"keyPath": list(key_path)}
        if component is not None:
            request["componentName"] = component
        return self._call("GetConfiguration", request)

    def subscribe_to_configuration_update(
        self,
        key_path: Sequence[str],
        on_update: Callable[[dict[str, Any]], None],
        *,
        component: str | None = None,
    ) -> Future[dict[str, Any]]:
        """Call ``on_update`` (on this transport's thread) with each ``configurationUpdateEvent``
        below ``key_path`` of ``component`` (None: this one), for as long as this connection
        lives."""

        def event(document: dict[str, Any]) -> None:
            update = document.get("configurationUpdateEvent")
            if isinstance(update, dict):
                on_update(update)

        request: dict[str, Any] = {"keyPath": list(key_path)}
        if component is not None:
            request["componentName"] = component
        return self._watch("SubscribeToConfigurationUpdate", request, event)

    def subscribe_to_component_updates(
        self, on_event: Callable[[str, dict[str, Any]], None]
    ) -> Future[dict[str, Any]]:
        """Call ``on_event(kind, event)`` (on this transport's thread) with each event the Nucleus
        sends before and after a deployment updates components: ``kind`` is ``preUpdateEvent``
        (``{"deploymentId", "isGgcRestarting"}``: answer it with ``defer_component_update``) or
        ``postUpdateEvent`` (``{"deploymentId"}``). Subscribed again after a reconnect, unless
        the IPC server refused it (nucleus lite does not serve it)."""

        def event(document: dict[str, Any]) -> None:
            for kind in ("preUpdateEvent", "postUpdateEvent"):
                inner = document.get(kind)
                if isinstance(inner, dict):
                    on_event(kind, inner)

        return self._watch("SubscribeToComponentUpdates", {}, event)

    def defer_component_update(
        self, deployment_id: str, recheck_after_ms: int, message: str | None = None
    ) -> Future[dict[str, Any]]:
        """Answer a ``preUpdateEvent``: ask the Nucleus to send it again in ``recheck_after_ms``
        (``message`` goes to its log), or, with 0, let the deployment go on. The Nucleus waits
        for an answer from every subscriber (up to the deployment's update policy timeout,
        60 s by default), so every event needs one."""
        request: dict[str, Any] = {"deploymentId": deployment_id}
        if message is not None:
            request["message"] = message
        request["recheckAfterMs"] = recheck_after_ms  # a request without it is ignored
        return self._call("DeferComponentUpdate", request)

    def _watch(
        self, operation: str, request: dict[str, Any], event: Callable[[dict[str, Any]], None]
    ) -> Future[dict[str, Any]]:
        """Open a stream of events that lives as long as the component: opened again on every
        new connection, unless the IPC server refuses it (then it would refuse it again)."""
        watch = (operation, request, event)
        with self._lock:
            self._watches.append(watch)

        def forget_if_refused(answer: Future[dict[str, Any]]) -> None:
            if isinstance(answer.exception(), IpcRefusedError):
                with self._lock:
                    if watch in self._watches:
                        self._watches.remove(watch)

        answer = self._call(operation, request, on_event=event)
        answer.add_done_callback(forget_if_refused)
        return answer

    def _call(
        self,
        operation: str,
        request: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> Future[dict[str, Any]]:
        connection = self._connection
        if connection is None:
            failed: Future[dict[str, Any]] = Future()
            failed.set_exception(IpcNotSentError("not connected to the IPC server"))
            return failed
        return connection.call(operation, request, on_event=on_event)[1]

    def change_topics(self, topics: Sequence[str]) -> None:
        """Subscribe to the topics added and drop the ones removed, all or nothing: when the IPC
        server refuses one (IpcRefusedError), every subscription stays as it was. A topic in
        both keeps its stream, so no message arrives twice. Not on this transport's thread."""
        connection = self._connection
        if connection is None:
            raise IpcNotSentError("not connected to the IPC server")
        with self._lock:
            current = dict(self._subscriptions)
        added: dict[str, int] = {}
        try:
            for topic in (t for t in topics if t not in current):
                stream_id, answer = connection.call(
                    "SubscribeToTopic",
                    {"topic": topic},
                    topic=topic,
                    on_event=self._on_event,
                    on_closed=self._on_subscription_closed,
                )
                answer.result(self._call_timeout_s + _PUMP_S)  # the reading thread answers it
                added[topic] = stream_id
        except Exception as exc:
            for stream_id in added.values():
                connection.terminate(stream_id)
            if isinstance(exc, IpcRefusedError):
                raise IpcRefusedError(
                    exc.error,
                    "SubscribeToTopic",
                    f"{_message_of(exc)}; {subscribe_advice(exc.topic or '')}",
                    topic=exc.topic,
                ) from None
            raise
        removed = [stream_id for topic, stream_id in current.items() if topic not in topics]
        with self._lock:
            self._topics = list(topics)
            self._subscriptions = {t: current.get(t) or added[t] for t in topics}
        for stream_id in removed:
            connection.terminate(stream_id)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop_receiving(self, timeout: float) -> None:
        with self._lock:
            self._receiving = False
            connection, streams, self._subscriptions = self._connection, self._subscriptions, {}
        if connection is not None:
            for stream_id in streams.values():
                connection.terminate(stream_id)  # a write, bounded by the send timeout

    def close(self, timeout: float) -> None:
        self._closing.set()
        with self._lock:
            connection = self._connection
        if connection is not None:
            connection.abort()  # the connection thread sees it at once and closes it
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # --- the connection thread ---------------------------------------------------------------
    def _run(self) -> None:
        give_up_at = time.monotonic() + self._start_timeout_s
        delay, ceiling = self._backoff_s
        closed_in_a_row = 0
        while not self._closing.is_set():
            try:
                connection = self._connect()
            except (OSError, IpcError) as exc:
                closed = isinstance(exc, IpcRefusedError) and exc.error == "ConnectionClosed"
                closed_in_a_row = closed_in_a_row + 1 if closed else 0
                if isinstance(exc, IpcRefusedError) and refusal_is_final(exc, closed_in_a_row):
                    self._fail(exc)  # a recipe or token problem: retrying cannot help
                    return
                if not self._started.is_set() and time.monotonic() + delay > give_up_at:
                    self._fail(
                        IpcError(
                            f"cannot reach the Greengrass IPC server at {self._socket_path}: {exc}"
                        )
                    )
                    return
                _log.warning(
                    "cannot reach the IPC server at %s (%s); retrying in %.2f s",
                    self._socket_path,
                    exc,
                    delay,
                )
                self._closing.wait(delay)
                delay = min(ceiling, delay * 2)
                continue
            delay, closed_in_a_row = self._backoff_s[0], 0
            if self._started.is_set():
                self._reconnects += 1
            self._started.set()
            self._serve(connection)

    def _connect(self) -> IpcConnection:
        """A logged-in connection with every subscription answered."""
        connection = IpcConnection.open(
            self._socket_path, self._auth_token, call_timeout_s=self._call_timeout_s
        )
        try:
            streams = {topic: self._subscribe(connection, topic) for topic in self._topics}
            with self._lock:
                watches = list(self._watches)
            for operation, request, event in watches:
                answer = connection.call(operation, request, on_event=event)
                error = self._await(connection, answer[1], operation)
                if error is not None:  # serving goes on; only live updates are missed
                    _log.warning("%s %s not renewed: %s", operation, request, error)
        except BaseException:
            connection.close()
            raise
        with self._lock:
            if not self._receiving:  # stop_receiving ran while we were connecting
                for stream_id in streams.values():
                    connection.terminate(stream_id)
                streams = {}
            self._connection, self._subscriptions = connection, streams
            self._connected.set()
        _log.info(
            "IPC connected to %s; subscribed to %s",
            self._socket_path,
            ", ".join(self._topics) if streams else "nothing",
        )
        return connection

    def _subscribe(self, connection: IpcConnection, topic: str) -> int:
        stream_id, response = connection.call(
            "SubscribeToTopic",
            {"topic": topic},
            topic=topic,
            on_event=self._on_event,
            on_closed=self._on_subscription_closed,
        )
        error = self._await(connection, response, f"SubscribeToTopic {topic!r}")
        if isinstance(error, IpcRefusedError):
            raise IpcRefusedError(
                error.error,
                "SubscribeToTopic",
                f"{_message_of(error)}; {subscribe_advice(topic)}",
                topic=topic,
            )
        if error is not None:
            raise IpcError(f"SubscribeToTopic {topic!r} failed: {error}")
        return stream_id

    def _await(self, connection: IpcConnection, answer: Future[Any], what: str) -> Any:
        """Read (this thread is the reader) until ``answer`` is done; its exception or None."""
        deadline = time.monotonic() + self._call_timeout_s + _PUMP_S
        while not answer.done():
            if time.monotonic() > deadline:
                raise IpcError(f"no answer to {what}")
            connection.pump(_PUMP_S)
        return answer.exception()

    def _serve(self, connection: IpcConnection) -> None:
        try:
            while not self._closing.is_set():
                connection.pump(_PUMP_S)
        except ConnectionLost as exc:
            if not self._closing.is_set():
                _log.warning("IPC connection lost (%s); reconnecting", exc)
        finally:
            with self._lock:
                self._connection, self._subscriptions = None, {}
                self._connected.clear()
            connection.close()

    def _fail(self, error: Exception) -> None:
        if self._started.is_set():
            self._on_fatal(error)
        else:
            self._start_error = error
            self._started.set()

    # --- stream callbacks: this transport's thread --------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        received = received_message(event)
        if received is not None:
            self._deliver(Message(topic=received[0], payload=received[1]))

    def _on_subscription_closed(self) -> None:
        # The server ended a subscription on a live connection: reconnect to subscribe again.
        if self._receiving and not self._closing.is_set():
            _log.warning("the IPC server closed a subscription; reconnecting")
            with self._lock:
                connection = self._connection
            if connection is not None:
                connection.abort()


def _settle(done: Future[None], answer: Future[dict[str, Any]]) -> None:
    error = answer.exception()
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _message_of(error: IpcRefusedError) -> str:
    return str(error).split(": ", 1)[-1]

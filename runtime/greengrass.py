"""Greengrass IPC transport: the only module that imports awsiotsdk.

The V2 client does not reconnect by itself. A supervisor thread watches the connection
(the lifecycle handler's on_disconnect, and subscription streams that close) and rebuilds the
client and the subscriptions with exponential back-off. Stream callbacks run on the client's
network thread (``executor=None``): they only hand the message to ``deliver``, which never
blocks and never calls IPC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .exceptions import EdgeboostError
from .server import Message

__all__ = ["GreengrassTransport"]

_log = logging.getLogger(__name__)


def _sdk() -> Any:
    try:
        import awsiot.greengrasscoreipc
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
        connect_timeout_s: float = 5.0,
        publish_timeout_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.05, 1.0),
    ) -> None:
        self._awsiot = _sdk()
        self._socket_path = socket_path
        self._auth_token = auth_token
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._backoff_s = backoff_s
        self._lock = threading.Lock()
        self._client: Any = None
        self._operations: list[Any] = []
        self._topics: list[str] = []
        self._deliver: Callable[[Message], None] | None = None
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._receiving = True
        self._closing = False
        self._generation = 0
        self._supervisor: threading.Thread | None = None

    # --- Transport ---------------------------------------------------------------------------
    def start(self, topics: Sequence[str], deliver: Callable[[Message], None]) -> None:
        self._topics, self._deliver = list(topics), deliver
        self._connect_with_backoff()
        self._supervisor = threading.Thread(
            target=self._supervise, name="edgeboost-ipc-supervisor", daemon=True
        )
        self._supervisor.start()

    def publish(self, topic: str, payload: bytes) -> None:
        model = self._awsiot.greengrasscoreipc.model
        message = model.PublishMessage(binary_message=model.BinaryMessage(message=payload))
        deadline = time.monotonic() + self._publish_timeout_s
        while True:
            client = self._client
            try:
                if client is None:
                    raise ConnectionError("not connected")
                client.publish_to_topic(topic=topic, publish_message=message)
                return
            except Exception as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing:
                    raise
                _log.warning("publish on %s failed (%s); waiting for the connection", topic, exc)
                self._lost.set()
                self._connected.clear()
                self._connected.wait(min(remaining, 1.0))

    def stop_receiving(self) -> None:
        with self._lock:
            self._receiving = False
            operations, self._operations = self._operations, []
        for operation in operations:
            try:
                operation.close().result(self._connect_timeout_s)
            except Exception as exc:  # already closed with the connection
                _log.debug("closing a subscription: %s", exc)

    def close(self) -> None:
        self._closing = True
        self._lost.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        self._close_client()

    # --- connection management ---------------------------------------------------------------
    def _supervise(self) -> None:
        while True:
            self._lost.wait()
            if self._closing:
                return
            _log.warning("IPC connection lost; reconnecting")
            self._close_client()
            self._connect_with_backoff()

    def _connect_with_backoff(self) -> None:
        delay, ceiling = self._backoff_s
        while not self._closing:
            try:
                self._connect_and_subscribe()
                return
            except Exception as exc:
                _log.warning("IPC connect failed (%s); retrying in %.2f s", exc, delay)
                time.sleep(delay)
                delay = min(ceiling, delay * 2)

    def _connect_and_subscribe(self) -> None:
        ipc = self._awsiot.greengrasscoreipc
        with self._lock:
            self._generation += 1
            generation = self._generation
            # Cleared before connecting, never after: a disconnect that happens while we
            # subscribe must stay visible to the supervisor.
            self._lost.clear()
        connection = ipc.connect(
            ipc_socket=self._socket_path,
            authtoken=self._auth_token,
            lifecycle_handler=_Lifecycle(self, generation),
            timeout=self._connect_timeout_s,
        )
        client = ipc.clientv2.GreengrassCoreIPCClientV2(client=connection, executor=None)
        operations = []
        try:
            if self._receiving:
                for topic in self._topics:
                    _, operation = client.subscribe_to_topic(
                        topic=topic,
                        on_stream_event=self._on_event,
                        on_stream_error=lambda error, g=generation: self._on_stream_error(error, g),
                        on_stream_closed=lambda g=generation: self._on_stream_closed(g),
                    )
                    operations.append(operation)
        except Exception:
            client.close(executor_wait=False)
            raise
        with self._lock:
            self._client, self._operations = client, operations
            self._connected.set()
        _log.info(
            "IPC connected; subscribed to %s", ", ".join(self._topics) if operations else "nothing"
        )

    def _close_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._operations = []
            self._connected.clear()
        if client is not None:
            try:
                client.close(executor_wait=False)
            except Exception as exc:
                _log.debug("closing the IPC client: %s", exc)

    def _connection_lost(self, generation: int) -> None:
        # Events of a connection we already replaced are stale.
        if generation == self._generation and not self._closing:
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
        _log.warning("subscription stream error: %s", error)
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
        _log.info("IPC disconnected: %s", reason)
        self._transport._connection_lost(self._generation)

    def on_error(self, error: Exception) -> bool:
        _log.warning("IPC error: %s", error)
        return True

    def on_ping(self, headers: Any, payload: Any) -> None:
        pass

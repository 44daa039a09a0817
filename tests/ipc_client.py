"""A real awsiotsdk V2 client of one component, for tests against any Greengrass IPC server
(the broker, or nucleus lite in broker/greengrass_lite.py). Callers check ``ipc is not None``
first (with conftest's need()): awsiotsdk is an extra."""

from __future__ import annotations

import json
import threading
from typing import Any

try:
    import awsiot.greengrasscoreipc as ipc
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import BinaryMessage, JsonMessage, PublishMessage
except ImportError:
    ipc = None


class Client:
    """Connects with ``token`` and collects what arrives on its subscriptions, in order."""

    def __init__(self, socket_path: str, token: str) -> None:
        self.v2 = GreengrassCoreIPCClientV2(
            client=ipc.connect(ipc_socket=socket_path, authtoken=token)
        )
        # (kind, message, topic): kind is "json" or "binary"; binary messages stay bytes here.
        self.events: list[tuple[str, Any, str]] = []
        self._arrived = threading.Condition()
        self._operations: list[Any] = []

    def subscribe(self, topic: str) -> None:
        _, operation = self.v2.subscribe_to_topic(topic=topic, on_stream_event=self._on_event)
        self._operations.append(operation)

    def _on_event(self, event: Any) -> None:
        with self._arrived:
            # A message may carry both parts; record each, JSON first.
            for kind, message in (("json", event.json_message), ("binary", event.binary_message)):
                if message is not None:
                    self.events.append((kind, message.message, message.context.topic))
            self._arrived.notify_all()

    def publish(self, topic: str, payload: Any) -> None:
        """bytes go as a binaryMessage, anything else as a jsonMessage."""
        if isinstance(payload, bytes):
            message = PublishMessage(binary_message=BinaryMessage(message=payload))
        else:
            message = PublishMessage(json_message=JsonMessage(message=payload))
        self.v2.publish_to_topic(topic=topic, publish_message=message)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> list[tuple[str, Any, str]]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.events) >= count, timeout)
            return list(self.events)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        """The bodies of the first ``count`` messages (fewer on timeout); binary ones decoded
        from JSON, as edgeboost's replies are."""
        return [
            json.loads(body) if kind == "binary" else body
            for kind, body, _ in self.wait_for_events(count, timeout)
        ]

    def close(self) -> None:
        for operation in self._operations:
            operation.close()
        self.v2.close()

"""The seam between the inference server and pub/sub: what a transport must do and promise.

Greengrass IPC through awsiotsdk is one transport (``greengrass.py``); tests use in-memory
ones. The server relies on these promises:

- ``deliver`` is called for every message received, on any thread; it never blocks.
- ``publish`` never blocks for long and reports its outcome through the returned future:
  ``None`` when the IPC server confirmed it, else one of the IpcError kinds, which tell the
  server whether a resend is safe (IpcNotSentError) or could duplicate (IpcUnconfirmedError),
  or whether the server refused it for good (IpcRefusedError: never a lost connection).
- A refused subscription is an IpcRefusedError from ``start``, or, after a reconnect, passed
  to ``on_fatal``: a component that cannot receive must stop, so Greengrass sees it fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from .exceptions import IpcError

__all__ = [
    "SOCKET_ENV",
    "TOKEN_ENV",
    "Message",
    "component_identity",
    "subscribe_advice",
]  # and Transport, for checkers

# What the Nucleus puts in a component's environment for IPC.
SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"


def component_identity(socket_path: str | None, token: str | None) -> tuple[str, str]:
    """The IPC socket and the component's token: given, or from the environment the Nucleus
    gives a component. Raises IpcError naming what is missing."""
    socket_path = socket_path or os.environ.get(SOCKET_ENV, "")
    token = token or os.environ.get(TOKEN_ENV, "")
    if not socket_path or not token:
        raise IpcError(
            f"{SOCKET_ENV} and {TOKEN_ENV} must be set (the Nucleus sets them for a "
            "component whose recipe has an aws.greengrass.ipc.pubsub accessControl)"
        )
    return socket_path, token


# A connection closed in answer to CONNECT is how nucleus lite refuses a token it does not know
# (or forgot when it restarted), but a dying IPC server does the same once: only this many in
# a row make a refusal.
CLOSED_AT_CONNECT_IS_REFUSAL = 3


def refusal_is_final(error: IpcError, closed_in_a_row: int) -> bool:
    """Whether ``error`` from a connect attempt should stop the component (see above)."""
    closed = getattr(error, "error", None) == "ConnectionClosed"
    return not closed or closed_in_a_row >= CLOSED_AT_CONNECT_IS_REFUSAL


def subscribe_advice(topic: str) -> str:
    """What to add to a recipe when SubscribeToTopic is refused."""
    return (
        "add to the component recipe's accessControl an aws.greengrass.ipc.pubsub policy with "
        f"operation aws.greengrass#SubscribeToTopic and resource {topic!r}"
    )


class Message:
    """One delivery: ``payload`` is bytes (binaryMessage) or a decoded object (jsonMessage).
    One per request: a plain __slots__ class (see records.py)."""

    __slots__ = ("payload", "received", "topic")

    def __init__(self, topic: str, payload: Any) -> None:
        self.topic, self.payload = topic, payload
        self.received = time.monotonic()


TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:  # a structural type for checkers only: no code calls through it
    from typing import Any, Protocol

    class Transport(Protocol):
        """What the server needs from pub/sub."""

        @property
        def reconnects(self) -> int:
            """Connections re-established since start."""

        def start(
            self,
            topics: Sequence[str],
            deliver: Callable[[Message], None],
            on_fatal: Callable[[Exception], None],
        ) -> None:
            """Connect and subscribe to ``topics`` (once, long-lived), or raise IpcError."""

        def publish(self, topic: str, payload: bytes) -> Future[None]:
            """Send one message; the future ends with None or an IpcError."""

        def wait_connected(self, timeout: float) -> bool:
            """Wait up to ``timeout`` seconds for a connection; True when there is one."""

        def stop_receiving(self, timeout: float) -> None:
            """Close the subscriptions, waiting at most ``timeout`` seconds."""

        def close(self, timeout: float) -> None:
            """Disconnect, waiting at most ``timeout`` seconds; publish fails afterwards."""

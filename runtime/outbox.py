"""Replies on their way out: many in flight at once, each published at most once.

An IPC round trip costs far more than answering a request, so replies are pipelined: up to
``max_in_flight`` publishes await the IPC server's answer at once, which lets a burst be
answered at the rate it arrives. The outbox has no thread of its own: workers call ``send``
(which waits only for a free slot) and ``resend_waiting``; outcomes arrive on whatever thread
the transport completes its futures on. Every reply ends in exactly one counted outcome:

- ``published``: the IPC server confirmed it;
- ``publish_refused:<Error>``: the server refused it with a modelled error (UnauthorizedError on
  the reply topic, say): logged with the fix, never resent, never a reconnect;
- ``publish_unconfirmed``: sent, but no confirmation came: never resent, since the consumer may
  already have it (a duplicate reply is a silent wrong answer for a consumer that counts);
- ``publish_not_sent``: nothing was sent, and no connection came back in time to send it.

A reply that was provably not sent (IpcNotSentError) waits for the connection to come back,
up to ``reconnect_wait_s`` after it was first sent, and is sent again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from .exceptions import IpcNotSentError, IpcRefusedError
from .service_log import ProblemLog

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["Outbox", "Reply"]


class Reply:
    __slots__ = ("payload", "queued", "topic")

    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic, self.payload = topic, payload
        self.queued = time.monotonic()


class Outbox:
    """Thread-safe."""

    def __init__(
        self,
        transport: Transport,
        count: Callable[[str], None],
        problems: ProblemLog,
        *,
        max_in_flight: int = 32,
        reconnect_wait_s: float = 10.0,
    ) -> None:
        self._transport = transport
        self._count = count
        self._problems = problems
        self._max_in_flight = max_in_flight
        self._reconnect_wait_s = reconnect_wait_s
        self._in_flight = 0
        self._not_sent: deque[Reply] = deque()  # waiting for the connection to come back
        self._changed = threading.Condition()
        self._deadline = float("inf")  # after close(): nothing waits beyond it

    @property
    def pending(self) -> int:
        """Replies awaiting the IPC server's answer or a connection."""
        with self._changed:
            return self._in_flight + len(self._not_sent)

    def send(self, reply: Reply) -> bool:
        """Publish once a slot is free; False when closed before one was (not counted)."""
        with self._changed:
            while self._in_flight >= self._max_in_flight:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 1.0))
            self._in_flight += 1
        try:
            future = self._transport.publish(reply.topic, reply.payload)
        except Exception as exc:  # a transport should return a failed future; be safe
            self._finished(reply, exc)
        else:
            future.add_done_callback(lambda done: self._finished(reply, done.exception()))
        return True

    def resend_waiting(self) -> None:
        """Send again what was not sent, once connected; give up on what waited too long."""
        with self._changed:
            if not self._not_sent:
                return
        if not self._transport.wait_connected(0):
            self._give_up(only_expired=True)
            return
        while True:
            with self._changed:
                if not self._not_sent:
                    return
                reply = self._not_sent.popleft()
            if not self.send(reply):
                with self._changed:
                    self._not_sent.appendleft(reply)
                return

    def close(self, deadline: float) -> None:
        """From ``deadline`` on, ``send`` no longer waits for a slot."""
        with self._changed:
            self._deadline = deadline
            self._changed.notify_all()

    def _finished(self, reply: Reply, error: BaseException | None) -> None:
        # May run on the transport's network thread: count, requeue, never block.
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()
            if isinstance(error, IpcNotSentError) and time.monotonic() < self._give_up_at(reply):
                self._not_sent.append(reply)
                return
        if error is None:
            self._count("published")
        elif isinstance(error, IpcNotSentError):
            self._count("publish_not_sent")
            self._problems.report("publish_not_sent", f"reply on {reply.topic} not sent: {error}")
        elif isinstance(error, IpcRefusedError):
            self._count(f"publish_refused:{error.error}")
            self._problems.report(f"refused:{error.error}", _refusal_advice(error))
        else:
            self._count("publish_unconfirmed")
            self._problems.report(
                "publish_unconfirmed",
                f"reply on {reply.topic} sent but not confirmed ({error}); not resent, "
                "so that no request is answered twice",
                level=logging.WARNING,
            )

    def _give_up(self, *, only_expired: bool) -> None:
        now = time.monotonic()
        with self._changed:
            expired = [r for r in self._not_sent if not only_expired or self._give_up_at(r) <= now]
            for reply in expired:
                self._not_sent.remove(reply)
        for reply in expired:
            self._count("publish_not_sent")
            self._problems.report(
                "publish_not_sent",
                f"reply on {reply.topic} not sent: no connection to the IPC server for "
                f"{self._reconnect_wait_s:g} s",
            )

    def _give_up_at(self, reply: Reply) -> float:
        return min(self._deadline, reply.queued + self._reconnect_wait_s)


def _refusal_advice(error: IpcRefusedError) -> str:
    text = f"the IPC server refused to publish a reply: {error}"
    if error.error == "UnauthorizedError" and error.topic is not None:
        text += (
            "; grant it in the recipe's accessControl: aws.greengrass.ipc.pubsub policy with "
            f"operation aws.greengrass#PublishToTopic and resource {error.topic!r}"
        )
    return text

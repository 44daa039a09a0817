"""Replies on their way out: published by one thread, many in flight, each at most once.

An IPC round trip costs far more than answering a request, so replies are pipelined: up to
``max_in_flight`` publishes await the IPC server's answer at once, which lets a burst be
answered at the rate it arrives. Every reply ends in exactly one counted outcome:

- ``published``: the IPC server confirmed it;
- ``publish_refused:<Error>``: the server refused it with a modelled error (UnauthorizedError on
  the reply topic, say): logged with the fix, never resent, never a reconnect;
- ``publish_unconfirmed``: sent, but no confirmation came: never resent, since the consumer may
  already have it (a duplicate reply is a silent wrong answer for a consumer that counts);
- ``publish_not_sent``: nothing was sent, and no connection came back in time to send it.

A reply that was provably not sent (IpcNotSentError) waits for the connection to come back,
up to ``reconnect_wait_s``, and is sent again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .exceptions import IpcNotSentError, IpcRefusedError
from .service_log import ProblemLog
from .transport import Transport

__all__ = ["Outbox", "Reply"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Reply:
    topic: str
    payload: bytes
    queued: float = field(default_factory=time.monotonic)
    resend: bool = False  # not sent the first time: wait for the connection first


class Outbox:
    """Thread-safe: ``put`` from any thread; one publisher thread runs ``run``."""

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
        self._pending: deque[Reply] = deque()
        self._in_flight = 0
        self._changed = threading.Condition()
        self._closing = False
        self._deadline = float("inf")  # after close(): nothing waits beyond it

    def put(self, reply: Reply) -> None:
        """Queue a reply; never blocks."""
        with self._changed:
            self._pending.append(reply)
            self._changed.notify_all()

    @property
    def unfinished(self) -> int:
        """Replies queued or awaiting the IPC server's answer."""
        with self._changed:
            return len(self._pending) + self._in_flight

    def close(self, deadline: float) -> None:
        """Publish what is queued until ``deadline`` (time.monotonic()), then stop ``run``."""
        with self._changed:
            self._closing, self._deadline = True, deadline
            self._changed.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        """Wait until nothing is queued or in flight, or until ``deadline``; True if idle."""
        with self._changed:
            while self._pending or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    # --- the publisher thread ----------------------------------------------------------------
    def run(self) -> None:
        while True:
            reply = self._next()
            if reply is None:
                return
            if reply.resend:  # the connection was down: nothing can go out before it is back
                self._transport.wait_connected(max(0.0, self._give_up_at(reply) - time.monotonic()))
            self._send(reply)

    def _next(self) -> Reply | None:
        """The next reply to send, once a slot is free; None when closed and past the end."""
        with self._changed:
            while True:
                past_deadline = time.monotonic() >= self._deadline
                if past_deadline or (self._closing and not self._pending and not self._in_flight):
                    return None
                if self._pending and self._in_flight < self._max_in_flight:
                    self._in_flight += 1
                    return self._pending.popleft()
                self._changed.wait(min(1.0, max(0.0, self._deadline - time.monotonic())))

    def _send(self, reply: Reply) -> None:
        try:
            future = self._transport.publish(reply.topic, reply.payload)
        except Exception as exc:  # a transport should return a failed future; be safe
            self._finished(reply, exc)
            return
        future.add_done_callback(lambda done: self._finished(reply, done.exception()))

    def _finished(self, reply: Reply, error: BaseException | None) -> None:
        # May run on the transport's network thread: count, requeue, never block.
        if isinstance(error, IpcNotSentError) and time.monotonic() < self._give_up_at(reply):
            reply.resend = True
            with self._changed:
                self._in_flight -= 1
                self._pending.appendleft(reply)
                self._changed.notify_all()
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
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

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

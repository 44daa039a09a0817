"""Admission: where a received request waits, and what happens when there is no room.

Two bounded queues under one lock. A request goes to the work queue while it has room; then
to the overload queue, whose entries are small (the request is kept only when it is small, else
just its id), and which the workers serve first, because an ``overloaded`` reply costs
microseconds; with both full, the request is shed and the caller counts it.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from . import protocol
from .transport import Message

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Inbox", "Overloaded"]

# Overloaded binaryMessages up to this size are kept whole, so that their id is read exactly;
# of larger ones only an id found as their first key is kept (see protocol.peek_id).
KEEP_FOR_ID_BYTES = 1024


class Overloaded:
    """What an "overloaded" reply needs."""

    __slots__ = ("payload", "request_id", "topic")

    def __init__(self, topic: str, payload: Any, request_id: str | int | None) -> None:
        self.topic = topic
        self.payload = payload  # the payload when small, else None
        self.request_id = request_id

    def reply_id(self) -> str | int | None:
        if self.payload is None:
            return self.request_id
        return protocol.peek_id(self.payload, decode_up_to=KEEP_FOR_ID_BYTES)


class Inbox:
    """Thread-safe; ``offer`` never blocks."""

    def __init__(self, work_size: int, overload_size: int) -> None:
        self._work: deque[Message] = deque()
        self._overloaded: deque[Overloaded] = deque()
        self._work_size, self._overload_size = work_size, overload_size
        self._changed = threading.Condition()

    def offer(self, message: Message) -> bool:
        """Queue ``message`` (as work, or for an overloaded reply); False when shed."""
        with self._changed:
            if len(self._work) < self._work_size:
                self._work.append(message)
                self._changed.notify()
                return True
            if len(self._overloaded) >= self._overload_size:
                return False
        entry = _overloaded(message)  # outside the lock: a regex over the first bytes
        with self._changed:
            if len(self._overloaded) >= self._overload_size:
                return False
            self._overloaded.append(entry)
            self._changed.notify()
            return True

    def take(self, timeout: float) -> Message | Overloaded | None:
        """The next entry, overloaded ones first; None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._overloaded and not self._work:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return self._overloaded.popleft() if self._overloaded else self._work.popleft()

    def resize(self, work_size: int, overload_size: int) -> None:
        """New bounds; entries already queued stay (a smaller bound applies to new arrivals)."""
        with self._changed:
            self._work_size, self._overload_size = work_size, overload_size

    def sizes(self) -> tuple[int, int]:
        """(waiting for a worker, waiting for an overloaded reply)."""
        with self._changed:
            return len(self._work), len(self._overloaded)


def _overloaded(message: Message) -> Overloaded:
    payload = message.payload
    if isinstance(payload, (bytes, bytearray)) and len(payload) <= KEEP_FOR_ID_BYTES:
        return Overloaded(message.topic, payload, None)
    # A jsonMessage's id is a dict lookup; a large binaryMessage's, a regex over its start.
    return Overloaded(message.topic, None, protocol.peek_id(payload))

"""A byte budget shared by all connections, handed out first come, first served.

Used for frames still arriving: a connection takes the frame's declared size before reading
its body and gives it back once the frame is whole (or the connection ends). When the budget
is spent the connection simply stops reading, so the kernel's socket buffers push back on the
sender; nothing is refused. Event loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["ByteBudget"]


class ByteBudget:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a byte budget needs a positive limit")
        self.limit = limit
        self._free = limit
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def free(self) -> int:
        return self._free

    async def take(self, size: int) -> None:
        """Wait until ``size`` bytes are free, then take them. Strict FIFO, so a big request
        is not starved by a stream of small ones."""
        if not 0 < size <= self.limit:
            raise ValueError(f"cannot take {size} bytes from a budget of {self.limit}")
        if not self._waiting and size <= self._free:
            self._free -= size
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (size, granted)
        self._waiting.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.give(size)  # granted, but our task was cancelled before it resumed
            else:
                with contextlib.suppress(ValueError):  # _grant may have dropped it already
                    self._waiting.remove(entry)
                self._grant()  # we may have been the head holding others back
            raise

    def give(self, size: int) -> None:
        self._free += size
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            size, granted = self._waiting[0]
            if not granted.cancelled():
                if size > self._free:
                    return
                self._free -= size
                granted.set_result(None)
            self._waiting.popleft()

"""Frames off one connection, within the broker's limits.

Before CONNECT is accepted a frame may be at most :data:`LOGIN_FRAME_SIZE` and everything must
arrive within ``login_timeout``; afterwards a frame may be up to ``max_frame_size``. Any frame
must arrive whole within ``frame_timeout`` of its first byte. A frame bigger than
``LOGIN_FRAME_SIZE`` takes its declared size from the broker-wide :class:`ByteBudget` before its
body is read, so stalled partial frames can hold at most ``max_partial_bytes`` in all.
"""

from __future__ import annotations

import asyncio

from edgeboost.broker.budget import ByteBudget
from edgeboost.broker.limits import LOGIN_FRAME_SIZE, Limits
from edgeboost.runtime.eventstream import FrameDecoder, FrameError, Message

__all__ = ["FrameReader", "ReadTimeout"]

_READ_SIZE = 64 * 1024


class ReadTimeout(Exception):
    """The peer did not log in, or did not finish a frame, in time."""


class FrameReader:
    """Reads one connection's frames; the session tells it when CONNECT was accepted."""

    def __init__(self, reader: asyncio.StreamReader, budget: ByteBudget, limits: Limits) -> None:
        self._reader = reader
        self._budget = budget
        self._limits = limits
        self._decoder = FrameDecoder()
        self._loop = asyncio.get_running_loop()
        self._login_deadline: float | None = self._loop.time() + limits.login_timeout
        self._frame_deadline: float | None = None  # set while a frame is partly here
        self._completed = 0  # frames decoded so far; the one arriving has this index
        self._reserved = 0  # bytes taken from the budget for frame number _reserved_for
        self._reserved_for = -1

    def logged_in(self) -> None:
        """CONNECT was accepted: no more login deadline, and frames may be full size."""
        self._login_deadline = None

    async def read(self) -> list[Message]:
        """The next whole frames, or [] once the peer has closed. Raises FrameError for a
        corrupt or oversized frame, ReadTimeout when a deadline passes, OSError from the
        socket."""
        while True:
            self._check_size()
            await self._reserve()
            data = await self._receive()
            if not data:
                return []
            had_partial = self._decoder.pending > 0
            messages = self._decoder.feed(data)
            self._completed += len(messages)
            if messages or not had_partial:  # a new frame (or none) is now arriving
                self._start_frame_clock()
            if messages:
                return messages

    def close(self) -> None:
        """Give back any budget held for a frame that will never finish."""
        self._release()

    def _check_size(self) -> None:
        # Checked here, not in the decoder, so a CONNECT read in the same chunk as the next
        # frame's prelude is routed (and may raise the cap) before that frame is judged.
        expected = self._decoder.expected
        limit = self._limits.max_frame_size if self._login_deadline is None else LOGIN_FRAME_SIZE
        if expected > limit:
            when = "" if self._login_deadline is None else " before CONNECT"
            raise FrameError(f"frame of {expected} bytes is over the {limit}-byte limit{when}")

    async def _reserve(self) -> None:
        if self._reserved and self._reserved_for != self._completed:
            self._release()  # that frame is whole
        expected = self._decoder.expected
        if expected <= LOGIN_FRAME_SIZE or self._reserved:
            return
        await self._budget.take(expected)
        self._reserved, self._reserved_for = expected, self._completed
        self._start_frame_clock()  # time spent waiting for the budget is not the peer's fault

    def _release(self) -> None:
        if self._reserved:
            self._budget.give(self._reserved)
            self._reserved = 0

    def _start_frame_clock(self) -> None:
        self._frame_deadline = (
            self._loop.time() + self._limits.frame_timeout if self._decoder.pending else None
        )

    async def _receive(self) -> bytes:
        deadlines = [d for d in (self._login_deadline, self._frame_deadline) if d is not None]
        if not deadlines:
            return await self._reader.read(_READ_SIZE)
        try:
            return await asyncio.wait_for(
                self._reader.read(_READ_SIZE), max(0.0, min(deadlines) - self._loop.time())
            )
        except asyncio.TimeoutError:
            if self._login_deadline is not None and self._login_deadline <= self._loop.time():
                raise ReadTimeout(
                    f"no CONNECT accepted within {self._limits.login_timeout:g} s"
                ) from None
            expected = self._decoder.expected
            frame = f"a {expected}-byte frame" if expected else "a frame"
            raise ReadTimeout(
                f"{frame} did not arrive whole within {self._limits.frame_timeout:g} s "
                f"({self._decoder.pending} bytes came)"
            ) from None

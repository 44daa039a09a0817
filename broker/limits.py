"""How much one client may make the broker hold or wait for, in time and in bytes.

The frame size cap is aws-c-event-stream's (16 MiB), which the Nucleus and the awsiotsdk client
both run on. The rest are the broker's own: the Nucleus has no login timeout and no budget for
frames still arriving, but a development broker that any local process can reach should not be
easy to stall or to run out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeboost.runtime.eventstream import MAX_MESSAGE_SIZE

__all__ = ["LOGIN_FRAME_SIZE", "MAX_PENDING_FRAMES", "Limits"]

# The largest frame accepted before CONNECT is accepted (a real CONNECT is ~100 bytes), and the
# size up to which a frame is read without a share of ``max_partial_bytes``.
LOGIN_FRAME_SIZE = 64 * 1024


MAX_PENDING_FRAMES = 1_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection and broker-wide limits; see :class:`~edgeboost.broker.Broker`."""

    # Outgoing frames a client may leave unread. The Nucleus buffers a slow client without a
    # count; so does the broker, up to max_pending_bytes (1,024 frames cut off a consumer that
    # received a 5,000-reply burst while publishing).
    max_pending_frames: int = MAX_PENDING_FRAMES
    max_pending_bytes: int = 64 * 1024 * 1024  # and their bytes (with the socket's buffer)
    flush_timeout: float = 2.0  # seconds to deliver the last frames before closing
    login_timeout: float = 10.0  # seconds from accept to an accepted CONNECT
    frame_timeout: float = 10.0  # seconds from a frame's first byte to its last
    max_frame_size: int = MAX_MESSAGE_SIZE
    max_partial_bytes: int = 64 * 1024 * 1024  # all connections' frames still arriving

    def __post_init__(self) -> None:
        if self.max_pending_frames < 1:
            raise ValueError("max_pending_frames must be at least 1")
        for name in ("flush_timeout", "login_timeout", "frame_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not LOGIN_FRAME_SIZE <= self.max_frame_size <= MAX_MESSAGE_SIZE:
            raise ValueError(f"max_frame_size must be {LOGIN_FRAME_SIZE}..{MAX_MESSAGE_SIZE} bytes")
        if self.max_partial_bytes < self.max_frame_size:
            raise ValueError("max_partial_bytes must hold at least one max_frame_size frame")
        if self.max_pending_bytes < MAX_MESSAGE_SIZE:
            raise ValueError(f"max_pending_bytes must hold a {MAX_MESSAGE_SIZE}-byte event")

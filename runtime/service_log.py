"""Logging for a long-running component: streams that fit Greengrass, repeats rate-limited.

The Nucleus writes a component's stdout to its log at INFO and stderr at WARN, so information
goes to stdout and only warnings and errors to stderr. A fault that repeats per request
(an unauthorized reply topic at 300 requests per second) must not flood a device's log: each
kind is logged at most once per interval, with the number of repeats it stands for.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["ProblemLog", "configure_service_logging"]

_FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_service_logging(*, verbose: bool = False) -> None:
    """Root logger: DEBUG/INFO to stdout, WARNING and above to stderr."""
    info = logging.StreamHandler(sys.stdout)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    root = logging.getLogger()
    for handler in (info, problems):
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class ProblemLog:
    """Log each kind of problem at most once per ``interval_s``; count every occurrence.

    Thread-safe. ``counts`` holds every report by kind, logged or not.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger, self._interval_s, self._clock = logger, interval_s, clock
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, kind: str, message: str, *, level: int = logging.ERROR) -> bool:
        """Log ``message`` unless ``kind`` was logged within the interval; True if logged."""
        now = self._clock()
        with self._lock:
            since = now - self._last_logged.get(kind, -float("inf"))
            if since < self._interval_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            self._last_logged[kind] = now
            repeats = self._suppressed.pop(kind, 0)
        if repeats:
            message += f" ({repeats} more like this in the last {since:.0f} s)"
        self._logger.log(level, message)
        return True

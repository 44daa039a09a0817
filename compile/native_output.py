"""Redirect what native (C/C++) code writes to file descriptors 1 and 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

__all__ = ["native_output_to"]


@contextmanager
def native_output_to(sink: BinaryIO) -> Iterator[None]:
    """While inside, fds 1 and 2 (where C++ libraries print) write into ``sink``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])

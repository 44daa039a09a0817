"""Reading a bundle's files: regular files only, bounded in size, and never blocking.

A bundle is data from elsewhere. Reading one of its files must neither hang (a FIFO, a
symlink to /dev/zero), nor touch a device (opening /dev/watchdog arms it), nor fill memory
(a file that is gigabytes long). Every bundle file is read through ``read_regular``.
"""

from __future__ import annotations

import os
import stat

from .exceptions import BundleError, ManifestError

__all__ = [
    "MAX_CHECKSUMS_BYTES",
    "MAX_LIBRARY_BYTES",
    "MAX_MANIFEST_BYTES",
    "path_problem",
    "read_regular",
]

MAX_MANIFEST_BYTES = 1 << 20
MAX_CHECKSUMS_BYTES = 1 << 20
# A 400x6 model compiles to ~1 MB; 256 MiB is far beyond any model a gateway can hold.
MAX_LIBRARY_BYTES = 256 << 20

# O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever. O_NOCTTY: a
# terminal must not become our controlling terminal. O_CLOEXEC: no leak into children.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | os.O_CLOEXEC


def read_regular(
    path: str, *, limit: int, what: str, error: type[BundleError] = ManifestError
) -> bytes:
    """The bytes of ``path``, a regular file (or a symlink to one) of at most ``limit`` bytes.

    ``what`` says where the name came from ("targets.x.file in manifest.json"); ``error`` is
    raised for a file that is not a regular file or is too large. FileNotFoundError passes
    through: each caller words "missing" its own way.
    """
    # stat before open, so that a device is refused without being opened at all.
    _check_kind(path, os.stat(path).st_mode, what, error)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        # fstat of the open file is what counts: the name may have been swapped since.
        info = os.fstat(fd)
        _check_kind(path, info.st_mode, what, error)
        _check_size(path, info.st_size, limit, what, error)
        data = _read_at_most(fd, limit + 1)
    finally:
        os.close(fd)
    # The file may have grown between fstat and read.
    _check_size(path, len(data), limit, what, error)
    return data


def _check_kind(path: str, mode: int, what: str, error: type[BundleError]) -> None:
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is {_kind(mode)}, expected a regular file ({what})")


def _check_size(path: str, size: int, limit: int, what: str, error: type[BundleError]) -> None:
    if size > limit:
        raise error(f"{path}: is {size:,} bytes, more than the {limit:,} allowed ({what})")


def _read_at_most(fd: int, count: int) -> bytes:
    chunks = []
    while count > 0:
        chunk = os.read(fd, min(count, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), f"of type {stat.S_IFMT(mode):o}")


def path_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file inside a bundle, or None when it can.

    Allowed: a relative path with "/" between non-empty components, none of them "." or
    "..", and no NUL, backslash or control character (sha256sum escapes those, and a NUL
    cannot reach the file system).
    """
    if not name:
        return "is empty"
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in name):
        return "contains a control character or backslash"
    if name.startswith("/"):
        return "is absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' component"
    return None

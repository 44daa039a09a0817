"""The broker's Unix socket file: length limit, stale-file cleanup, removal on shutdown."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

__all__ = [
    "MAX_SOCKET_PATH_BYTES",
    "SocketPathError",
    "check_socket_path",
    "claim_socket_path",
    "release_socket_path",
    "socket_identity",
]

# sun_path holds 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


class SocketPathError(OSError):
    """The socket path cannot be used: too long, not a socket, or served by someone else."""


def check_socket_path(path: str) -> None:
    size = len(os.fsencode(path))
    if size == 0:
        raise SocketPathError("the socket path is empty")
    if size > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(
            f"socket path is {size} bytes, over the Unix limit of {MAX_SOCKET_PATH_BYTES}: {path}"
        )


def claim_socket_path(path: str) -> None:
    """Remove a stale socket file left by a broker that died; refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketPathError(f"{path} exists and is not a socket; not replacing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # nobody listening: stale
        except OSError as exc:
            raise SocketPathError(f"cannot check whether {path} is in use: {exc}") from exc
        else:
            raise SocketPathError(f"another process is already serving on {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def socket_identity(path: str) -> tuple[int, int]:
    """(device, inode) of the socket file we bound, to avoid deleting a successor's file."""
    info = os.lstat(path)
    return info.st_dev, info.st_ino


def release_socket_path(path: str, identity: tuple[int, int] | None) -> None:
    """Remove the socket file if it is still the one we created."""
    try:
        if identity is None or socket_identity(path) != identity:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass

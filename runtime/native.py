"""The one seam to native code: cffi in ABI mode over ``native/edgeboost.h``.

ABI mode needs no compiler on the device. The declarations come from ``_abi.py``, generated
from the same header the library was compiled against (``compile/abi_module.py``; a test
fails on drift), so the two cannot drift apart, and the device never parses C: only cffi's
C module ``_cffi_backend`` is imported, not cffi, pycparser and ply (2.3 MiB, ~40 ms).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import weakref

import _cffi_backend

from ._abi import ffi as _FFI
from .elf import check_shared_object
from .exceptions import LibraryLoadError, MetadataMismatchError, NativeError
from .records import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "NativeLibrary",
    "from_buffer",
    "load_library",
    "new",
    "runtime_abi_version",
    "unpack",
]

# cffi's C module. ``cffi.FFI.new``, ``.from_buffer`` and ``.unpack`` are Python wrappers that
# turn a type given as text into a ctype and call these; ``predict`` passes ctypes (from
# ``ffi.typeof``) and calls these directly, which saves ~0.2 us each on every prediction.
new: Any = _cffi_backend.newp  # new(ctype, init or length) -> owning cdata, zero-filled
from_buffer: Any = _cffi_backend.from_buffer  # from_buffer(ctype, buffer, require_writable)
unpack: Any = _cffi_backend.unpack  # unpack(cdata, length) -> list of Python values


def runtime_abi_version() -> int:
    """The ABI this runtime speaks (the header's EDGEBOOST_ABI_VERSION), without a library."""
    return int(_FFI.integer_const("EDGEBOOST_ABI_VERSION"))


# Not slots=True: weakref.finalize (in load_library) needs a weak reference to the object.
@record
class NativeLibrary:
    """A loaded model library. Keep this object alive as long as the model is used: when
    it is collected, the library is unloaded."""

    ffi: Any
    lib: Any
    path: str  # the bundle file the verified bytes came from (for messages)

    def string(self, c_string: Any) -> str:
        return str(self.ffi.string(c_string).decode("utf-8"))

    def check(self, status: int) -> None:
        """Raise NativeError for any non-zero status, with the library's own message."""
        if status != 0:
            raise NativeError(status, self.string(self.lib.edgeboost_status_message(status)))


def load_library(image: bytes, origin: str) -> NativeLibrary:
    """dlopen a private copy of ``image``, the verified bytes of the library file ``origin``.

    The file on disk is never mapped: the loader maps a sealed memfd (or, without memfd, an
    unlinked temporary file) holding exactly ``image``, so rewriting or truncating the
    bundle's file later can neither crash nor change this process.
    """
    origin = str(origin)
    check_shared_object(image, origin)
    ffi = _FFI
    fd = _sealed_memfd(image, label=f"edgeboost:{origin[-200:]}")
    try:
        if fd is not None:
            lib = _dlopen(ffi, f"/proc/self/fd/{fd}", origin)
        else:
            lib = _dlopen_private_file(ffi, image, origin)
        native = NativeLibrary(ffi, lib, origin)
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    # The memfd stays open as long as the library is loaded, though the mapping alone would
    # keep its pages: glibc knows a library by the name it was opened with, and once fd N
    # is closed the next memfd can be fd N again; dlopen("/proc/self/fd/N") would then
    # return the library already loaded under that name, another model's. Closing only
    # after dlclose rules that out. At exit nothing is unloaded: a daemon thread may still
    # be predicting.
    weakref.finalize(native, _unload, ffi, lib, fd).atexit = False
    _check_abi(native)
    return native


def _unload(ffi: Any, lib: Any, fd: int | None) -> None:
    ffi.dlclose(lib)
    if fd is not None:
        os.close(fd)


def _check_abi(native: NativeLibrary) -> None:
    try:
        abi = native.lib.edgeboost_abi_version()
    except AttributeError as exc:
        raise MetadataMismatchError(
            f"{native.path}: not an edgeboost model library ({exc})"
        ) from exc
    expected = native.lib.EDGEBOOST_ABI_VERSION
    if abi != expected:
        raise MetadataMismatchError(
            f"{native.path}: library speaks ABI version {abi}, this runtime speaks {expected}"
        )


def _dlopen(ffi: Any, name: str, origin: str) -> Any:
    try:
        return ffi.dlopen(name)
    except OSError as exc:
        raise LibraryLoadError(f"{origin}: cannot be loaded: {exc}") from exc


# MFD_EXEC (Linux 6.3+): where vm.memfd_noexec=1, a memfd without it cannot be mapped
# executable. Older kernels refuse the unknown flag with EINVAL; then it is not needed.
_MFD_EXEC = 0x0010


def _sealed_memfd(image: bytes, label: str) -> int | None:
    """A memfd holding ``image``, sealed against any change; None where memfds (Linux
    3.17+, with /proc mounted) are missing or refused. ``label`` shows in /proc/PID/maps."""
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd = _memfd_create(label)
    except OSError:  # ENOSYS (old kernel), EACCES (vm.memfd_noexec=2), EMFILE, ...
        return None
    try:
        _write_all(fd, image)
        # Sealed, the copy cannot be written or truncated, not even through /proc/PID/fd.
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError:  # ENOSPC or ENOMEM for the copy: the temporary file may still do
        os.close(fd)
        return None
    return fd


def _memfd_create(label: str) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        return os.memfd_create(label, flags | _MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return os.memfd_create(label, flags)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _dlopen_private_file(ffi: Any, image: bytes, origin: str) -> Any:
    """dlopen ``image`` from a file only this process can reach: a new file in a new 0700
    directory, both removed right after dlopen (the mapping keeps the pages).

    The name is unique (a fresh mkdtemp directory), so glibc cannot mistake it for a
    library loaded earlier; a noexec /tmp defeats this, so TMPDIR must allow mapping code.
    """
    import tempfile  # only here: importing it costs ~2 ms of every start-up

    directory = tempfile.mkdtemp(prefix="edgeboost-")
    path = os.path.join(directory, "libmodel.so")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, image)
        finally:
            os.close(fd)
        return _dlopen(ffi, path, origin)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.rmdir(directory)

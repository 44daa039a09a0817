"""The one seam to native code: cffi in ABI mode over ``native/edgeboost.h``.

ABI mode needs no compiler on the device; the declarations are read from the same header
the library was compiled against, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import _cffi_backend
import cffi

from .exceptions import MetadataMismatchError, NativeError

__all__ = ["NativeLibrary", "cdef_source", "from_buffer", "new", "open_library", "unpack"]

_BEGIN, _END = "/* cdef:begin */", "/* cdef:end */"

# cffi's C module. ``cffi.FFI.new``, ``.from_buffer`` and ``.unpack`` are Python wrappers that
# turn a type given as text into a ctype and call these; ``predict`` passes ctypes (from
# ``ffi.typeof``) and calls these directly, which saves ~0.2 us each on every prediction.
new: Any = _cffi_backend.newp  # new(ctype, init or length) -> owning cdata, zero-filled
from_buffer: Any = _cffi_backend.from_buffer  # from_buffer(ctype, buffer, require_writable)
unpack: Any = _cffi_backend.unpack  # unpack(cdata, length) -> list of Python values


@lru_cache(maxsize=1)
def cdef_source() -> str:
    """The declarations between the cdef markers of edgeboost.h."""
    header = resources.files("edgeboost.native").joinpath("edgeboost.h").read_text("utf-8")
    start, end = header.index(_BEGIN) + len(_BEGIN), header.index(_END)
    return header[start:end]


@lru_cache(maxsize=1)
def _ffi() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(cdef_source())
    return ffi


@dataclass(frozen=True, slots=True)
class NativeLibrary:
    """A loaded model library. Keep this object alive as long as the model is used."""

    ffi: cffi.FFI
    lib: Any
    path: str

    def string(self, c_string: Any) -> str:
        return str(self.ffi.string(c_string).decode("utf-8"))

    def check(self, status: int) -> None:
        """Raise NativeError for any non-zero status, with the library's own message."""
        if status != 0:
            raise NativeError(status, self.string(self.lib.edgeboost_status_message(status)))


def open_library(path: str | Path) -> NativeLibrary:
    ffi = _ffi()
    try:
        lib = ffi.dlopen(str(path))
    except OSError as exc:
        raise MetadataMismatchError(f"{path}: cannot be loaded: {exc}") from exc
    try:
        abi = lib.edgeboost_abi_version()
    except AttributeError as exc:
        raise MetadataMismatchError(f"{path}: not an edgeboost model library ({exc})") from exc
    expected = lib.EDGEBOOST_ABI_VERSION
    if abi != expected:
        raise MetadataMismatchError(
            f"{path}: library speaks ABI version {abi}, this runtime speaks {expected}"
        )
    return NativeLibrary(ffi, lib, str(path))

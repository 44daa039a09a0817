"""Enough of ELF to refuse, before dlopen, a shared library that is cut short.

The dynamic loader maps each loadable segment of the file and then reads it as memory. A
segment that lies (partly) beyond the end of the file is mapped all the same, and the first
read of a page past the end kills the process with SIGBUS. A truncated library whose hashes
were resealed passes every sha256 check, so its segments are checked here, where a short
file is still a clean error.
"""

from __future__ import annotations

import struct

from .exceptions import MetadataMismatchError

__all__ = ["check_shared_object"]

_MAGIC = b"\x7fELF"
_ET_DYN = 3
# e_ident[EI_CLASS] -> (ELF header after e_ident, program header, fields of interest).
# Header fields: e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize,
# e_phentsize, e_phnum, ... Program header: index of p_type, p_offset and p_filesz.
_LAYOUTS = {
    1: ("HHIIIIIHHH", "IIIIIIII", (0, 1, 4)),  # 32-bit: type offset vaddr paddr filesz ...
    2: ("HHIQQQIHHH", "IIQQQQQQ", (0, 2, 5)),  # 64-bit: type flags offset vaddr paddr filesz
}
_BYTE_ORDER = {1: "<", 2: ">"}


def check_shared_object(image: bytes, origin: str) -> None:
    """Raise MetadataMismatchError naming ``origin`` unless ``image`` is an ELF shared
    object whose header, program headers and segments all lie within its bytes."""
    size = len(image)
    if size < 16 or image[:4] != _MAGIC:
        raise MetadataMismatchError(f"{origin}: not an ELF shared library (no ELF magic)")
    layout, order = _LAYOUTS.get(image[4]), _BYTE_ORDER.get(image[5])
    if layout is None or order is None:
        raise MetadataMismatchError(
            f"{origin}: unknown ELF class {image[4]} or byte order {image[5]}"
        )
    header_format, segment_format, (i_type, i_offset, i_filesz) = layout
    header = _unpack(order + header_format, image, 16, origin, "the ELF header")
    e_type, phoff, phentsize, phnum = header[0], header[4], header[8], header[9]
    if e_type != _ET_DYN:
        raise MetadataMismatchError(f"{origin}: ELF type {e_type}, expected a shared object (3)")
    if phentsize < struct.calcsize(order + segment_format):
        raise MetadataMismatchError(f"{origin}: program header entries of {phentsize} bytes")
    for index in range(phnum):
        where = f"program header {index}"
        segment = _unpack(order + segment_format, image, phoff + index * phentsize, origin, where)
        end = segment[i_offset] + segment[i_filesz]
        if segment[i_filesz] and end > size:
            raise MetadataMismatchError(
                f"{origin}: truncated: segment {index} (type {segment[i_type]:#x}) ends at byte "
                f"{end:,}, but the file has {size:,} bytes"
            )


def _unpack(fmt: str, image: bytes, offset: int, origin: str, what: str) -> tuple[int, ...]:
    end = offset + struct.calcsize(fmt)
    if end > len(image):
        raise MetadataMismatchError(
            f"{origin}: truncated: {what} ends at byte {end:,}, but the file has "
            f"{len(image):,} bytes"
        )
    return struct.unpack_from(fmt, image, offset)

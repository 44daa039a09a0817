"""AWS event-stream framing: the binary messages that carry Greengrass IPC.

A frame is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), typed
headers, a payload and a CRC32 of everything before it. All integers are big-endian. This
module knows nothing about RPC semantics beyond the message-type and flag numbers.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence

__all__ = [
    "MAX_HEADERS_SIZE",
    "MAX_HEADER_NAME_SIZE",
    "MAX_HEADER_VALUE_SIZE",
    "MAX_MESSAGE_SIZE",
    "PRELUDE_SIZE",
    "FrameDecoder",
    "FrameError",
    "Header",
    "HeaderType",
    "Message",
    "MessageFlag",
    "MessageType",
    "decode_message",
    "encode_headers",
    "encode_message",
]

PRELUDE_SIZE = 12
_CRC_SIZE = 4
_MIN_MESSAGE_SIZE = PRELUDE_SIZE + _CRC_SIZE
# Limits of aws-c-event-stream, which both the awsiotsdk client and the Nucleus use.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
MAX_HEADERS_SIZE = 128 * 1024
MAX_HEADER_NAME_SIZE = 127
MAX_HEADER_VALUE_SIZE = 32767

_PRELUDE = struct.Struct(">III")
_U32 = struct.Struct(">I")


class FrameError(ValueError):
    """A frame is malformed: bad CRC, impossible lengths, or an undecodable header."""


class HeaderType(enum.IntEnum):
    """Wire codes of the ten event-stream header value types."""

    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTE_BUF = 6
    STRING = 7
    TIMESTAMP = 8  # milliseconds since the Unix epoch, as a signed 64-bit integer
    UUID = 9


class MessageType(enum.IntEnum):
    """Values of the ``:message-type`` header in event-stream RPC."""

    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


class MessageFlag(enum.IntFlag):
    """Bits of the ``:message-flags`` header in event-stream RPC."""

    NONE = 0
    CONNECTION_ACCEPTED = 1
    TERMINATE_STREAM = 2


TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import uuid

    HeaderValue = bool | int | bytes | str | uuid.UUID

_INT_FORMATS: dict[HeaderType, struct.Struct] = {
    HeaderType.BYTE: struct.Struct(">b"),
    HeaderType.INT16: struct.Struct(">h"),
    HeaderType.INT32: struct.Struct(">i"),
    HeaderType.INT64: struct.Struct(">q"),
    HeaderType.TIMESTAMP: struct.Struct(">q"),
}
_LENGTH_PREFIXED = (HeaderType.BYTE_BUF, HeaderType.STRING)


class Header:
    """One typed header. Booleans carry their value in the type code (BOOL_TRUE/BOOL_FALSE).

    A value object: equal by value, never changed after creation. Plain __slots__, not a
    dataclass: frames make several per request, and the device runtime does without
    ``dataclasses`` (see records.py)."""

    __slots__ = ("name", "type", "value")

    def __init__(self, name: str, type: HeaderType, value: HeaderValue) -> None:
        self.name, self.type, self.value = name, type, value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Header):
            return NotImplemented
        return (self.name, self.type, self.value) == (other.name, other.type, other.value)

    def __hash__(self) -> int:
        return hash((self.name, self.type, self.value))

    def __repr__(self) -> str:
        return f"Header({self.name!r}, {self.type!r}, {self.value!r})"

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        return cls(name, HeaderType.STRING, value)

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        return cls(name, HeaderType.INT32, value)

    @classmethod
    def boolean(cls, name: str, value: bool) -> Header:
        return cls(name, HeaderType.BOOL_TRUE if value else HeaderType.BOOL_FALSE, value)


class Message:
    """A decoded frame: headers in wire order, and the payload. A value object, like Header."""

    __slots__ = ("headers", "payload")

    def __init__(self, headers: tuple[Header, ...], payload: bytes = b"") -> None:
        self.headers, self.payload = headers, payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.headers, self.payload) == (other.headers, other.payload)

    def __hash__(self) -> int:
        return hash((self.headers, self.payload))

    def __repr__(self) -> str:
        return f"Message({self.headers!r}, {self.payload!r})"

    def find(self, name: str) -> Header | None:
        """The first header called ``name`` (case-insensitive, as aws-c-event-stream compares)."""
        wanted = name.lower()
        for header in self.headers:
            if header.name.lower() == wanted:
                return header
        return None

    def encode(self) -> bytes:
        return encode_message(self.headers, self.payload)


def encode_headers(headers: Iterable[Header]) -> bytes:
    """Serialize headers in the given order."""
    parts: list[bytes] = []
    for header in headers:
        name = header.name.encode("utf-8")
        if not 0 < len(name) <= MAX_HEADER_NAME_SIZE:
            raise FrameError(f"header name {header.name!r} must be 1..{MAX_HEADER_NAME_SIZE} bytes")
        parts.append(bytes((len(name),)) + name + bytes((header.type,)) + _encode_value(header))
    return b"".join(parts)


def _encode_value(header: Header) -> bytes:
    kind, value = header.type, header.value
    if kind in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        return b""
    if kind in _INT_FORMATS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise FrameError(f"header {header.name!r}: {kind.name} needs an int, got {value!r}")
        try:
            return _INT_FORMATS[kind].pack(value)
        except struct.error as exc:
            raise FrameError(f"header {header.name!r}: {value} does not fit {kind.name}") from exc
    if kind in _LENGTH_PREFIXED:
        if kind is HeaderType.STRING and isinstance(value, str):
            raw = value.encode("utf-8")
        elif kind is HeaderType.BYTE_BUF and isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
        else:
            raise FrameError(f"header {header.name!r}: wrong value type for {kind.name}")
        if len(raw) > MAX_HEADER_VALUE_SIZE:
            raise FrameError(
                f"header {header.name!r}: value is longer than {MAX_HEADER_VALUE_SIZE}"
            )
        return struct.pack(">H", len(raw)) + raw
    if kind is HeaderType.UUID and len(getattr(value, "bytes", b"")) == 16:  # a uuid.UUID
        return value.bytes  # type: ignore[union-attr]
    raise FrameError(f"header {header.name!r}: cannot encode {kind!r} with {value!r}")


def encode_message(headers: Sequence[Header], payload: bytes = b"") -> bytes:
    """Build one complete frame (prelude, headers, payload, message CRC)."""
    encoded_headers = encode_headers(headers)
    if len(encoded_headers) > MAX_HEADERS_SIZE:
        raise FrameError(f"headers take {len(encoded_headers)} bytes, over {MAX_HEADERS_SIZE}")
    total = _MIN_MESSAGE_SIZE + len(encoded_headers) + len(payload)
    if total > MAX_MESSAGE_SIZE:
        raise FrameError(f"frame of {total} bytes is over the {MAX_MESSAGE_SIZE}-byte limit")
    prelude = _PRELUDE.pack(total, len(encoded_headers), 0)[:8]
    prelude += _U32.pack(zlib.crc32(prelude))
    body = prelude + encoded_headers + bytes(payload)
    return body + _U32.pack(zlib.crc32(body))


def _check_prelude(prelude: bytes) -> tuple[int, int]:
    """Validate a 12-byte prelude; return (total length, headers length)."""
    total, headers_length, prelude_crc = _PRELUDE.unpack(prelude)
    computed = zlib.crc32(prelude[:8])
    if computed != prelude_crc:
        raise FrameError(
            f"prelude CRC mismatch: frame says {prelude_crc:#010x}, computed {computed:#010x}"
        )
    if total < _MIN_MESSAGE_SIZE:
        raise FrameError(
            f"total length {total} is shorter than the {_MIN_MESSAGE_SIZE}-byte minimum"
        )
    if total > MAX_MESSAGE_SIZE:
        raise FrameError(f"total length {total} is over the {MAX_MESSAGE_SIZE}-byte limit")
    if headers_length > MAX_HEADERS_SIZE or headers_length > total - _MIN_MESSAGE_SIZE:
        raise FrameError(f"headers length {headers_length} does not fit a {total}-byte frame")
    return total, headers_length


def decode_message(frame: bytes) -> Message:
    """Decode exactly one frame; raise :class:`FrameError` if it is corrupt or has extra bytes."""
    frame = bytes(frame)
    if len(frame) < PRELUDE_SIZE:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than the prelude")
    total, headers_length = _check_prelude(frame[:PRELUDE_SIZE])
    if len(frame) != total:
        raise FrameError(f"prelude says {total} bytes but the frame has {len(frame)}")
    (message_crc,) = _U32.unpack_from(frame, total - _CRC_SIZE)
    computed = zlib.crc32(frame[: total - _CRC_SIZE])
    if computed != message_crc:
        raise FrameError(
            f"message CRC mismatch: frame says {message_crc:#010x}, computed {computed:#010x}"
        )
    headers_end = PRELUDE_SIZE + headers_length
    headers = _decode_headers(frame[PRELUDE_SIZE:headers_end])
    return Message(headers, frame[headers_end : total - _CRC_SIZE])


def _decode_headers(data: bytes) -> tuple[Header, ...]:
    headers: list[Header] = []
    offset = 0
    while offset < len(data):
        name_length = data[offset]
        offset += 1
        name_bytes = _take(data, offset, name_length, "header name")
        offset += name_length
        name = _utf8(name_bytes, "header name")
        type_code = _take(data, offset, 1, f"type of header {name!r}")[0]
        offset += 1
        try:
            kind = HeaderType(type_code)
        except ValueError:
            raise FrameError(f"header {name!r} has unknown type code {type_code}") from None
        value, offset = _decode_value(data, offset, kind, name)
        headers.append(Header(name, kind, value))
    return tuple(headers)


def _decode_value(data: bytes, offset: int, kind: HeaderType, name: str) -> tuple[HeaderValue, int]:
    if kind is HeaderType.BOOL_TRUE:
        return True, offset
    if kind is HeaderType.BOOL_FALSE:
        return False, offset
    if kind in _INT_FORMATS:
        fmt = _INT_FORMATS[kind]
        raw = _take(data, offset, fmt.size, f"value of header {name!r}")
        return fmt.unpack(raw)[0], offset + fmt.size
    if kind in _LENGTH_PREFIXED:
        (length,) = struct.unpack(">H", _take(data, offset, 2, f"length of header {name!r}"))
        raw = _take(data, offset + 2, length, f"value of header {name!r}")
        value: HeaderValue = _utf8(raw, f"header {name!r}") if kind is HeaderType.STRING else raw
        return value, offset + 2 + length
    raw = _take(data, offset, 16, f"value of header {name!r}")  # UUID
    import uuid  # only here: no IPC server sends UUID headers, and it costs ~0.4 MiB

    return uuid.UUID(bytes=raw), offset + 16


def _take(data: bytes, offset: int, length: int, what: str) -> bytes:
    if offset + length > len(data):
        raise FrameError(f"{what} runs past the end of the headers block")
    return data[offset : offset + length]


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"{what} is not valid UTF-8") from exc


class FrameDecoder:
    """Split a byte stream into frames. Feed it whatever ``recv`` returned."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return every frame now complete. Raises :class:`FrameError` on corruption.

        The prelude is checked as soon as it arrives, so a corrupt length never makes us wait
        for (or allocate) megabytes that are not coming.
        """
        return list(self.frames(data))

    def frames(self, data: bytes) -> Iterator[Message]:
        """Like :meth:`feed`, one frame at a time: the frames before a corrupt one are yours."""
        self._buffer += data
        while len(self._buffer) >= PRELUDE_SIZE:
            total, _ = _check_prelude(bytes(self._buffer[:PRELUDE_SIZE]))
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            yield decode_message(frame)

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    @property
    def expected(self) -> int:
        """Total length declared by the frame being received (its prelude already checked), or 0
        while fewer than :data:`PRELUDE_SIZE` bytes of it are here. Lets a reader refuse or
        budget for a frame before buffering it."""
        if len(self._buffer) < PRELUDE_SIZE:
            return 0
        return int(_U32.unpack_from(self._buffer)[0])

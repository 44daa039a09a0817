"""The event-stream codec: golden frames from the real awsiotsdk client, every header type,
and rejection of corrupt frames."""

from __future__ import annotations

import ast
import re
import struct
import uuid
import zlib
from dataclasses import dataclass

import pytest

from edgeboost.broker import rpc
from edgeboost.runtime.eventstream import (
    MAX_MESSAGE_SIZE,
    FrameDecoder,
    FrameError,
    Header,
    HeaderType,
    Message,
    MessageFlag,
    MessageType,
    decode_message,
    encode_message,
)

from .conftest import SHARED, need

# Frames the real awsiotsdk client sent (and a trial broker answered); see its README there.
TRIAL_LOG = SHARED / "data" / "ipc" / "frames-trial.log"
TRIAL_FRAMES = 16

_FRAME_LINE = re.compile(
    r"^(?P<dir>C->S|S->C) len=(?P<len>\d+) hdrlen=(?P<hdrlen>\d+) "
    r"prelude_crc=0x(?P<pcrc>[0-9a-f]{8}) msg_crc=(?P<mcrc>[0-9a-f]{8}) "
    r"(?P<headers>.*?) ?payload=(?P<payload>b'.*?'|b\".*?\")(?:\.\.\.\((?P<size>\d+) bytes\))?$"
)
_HEADER = re.compile(r"(?P<name>\S+?):(?P<type>STRING|INT32)=(?P<value>'[^']*'|-?\d+)")


@dataclass(frozen=True)
class LoggedFrame:
    direction: str
    length: int
    headers_length: int
    prelude_crc: int
    message_crc: int
    headers: tuple[Header, ...]
    payload: bytes
    payload_size: int  # the real size; ``payload`` is cut short when the log truncated it

    @property
    def complete(self) -> bool:
        return len(self.payload) == self.payload_size


def _trial_log() -> str:
    need(TRIAL_LOG.is_file(), f"{TRIAL_LOG} (the captured IPC frames in ../shared)")
    return TRIAL_LOG.read_text()


def _logged_frames() -> list[LoggedFrame]:
    frames = []
    for line in _trial_log().splitlines():
        match = _FRAME_LINE.match(line)
        if match is None:
            continue
        headers = []
        for header in _HEADER.finditer(match["headers"]):
            if header["type"] == "STRING":
                headers.append(Header.string(header["name"], ast.literal_eval(header["value"])))
            else:
                headers.append(Header.int32(header["name"], int(header["value"])))
        payload = ast.literal_eval(match["payload"])
        frames.append(
            LoggedFrame(
                direction=match["dir"],
                length=int(match["len"]),
                headers_length=int(match["hdrlen"]),
                prelude_crc=int(match["pcrc"], 16),
                message_crc=int(match["mcrc"], 16),
                headers=tuple(headers),
                payload=payload,
                payload_size=int(match["size"]) if match["size"] else len(payload),
            )
        )
    return frames


@pytest.fixture(scope="module")
def logged() -> list[LoggedFrame]:
    return _logged_frames()


def _connect_hex() -> bytes:
    for line in _trial_log().splitlines():
        if line.strip().startswith("hex:"):
            return bytes.fromhex(line.split(":", 1)[1].strip())
    raise AssertionError("no hex line in the trial log")


def _prelude(frame: bytes) -> tuple[int, int, int]:
    total, headers_length, prelude_crc = struct.unpack(">III", frame[:12])
    return total, headers_length, prelude_crc


def _raw_frame(
    headers_block: bytes,
    payload: bytes = b"",
    *,
    total: int | None = None,
    headers_length: int | None = None,
) -> bytes:
    """A frame with valid CRCs around arbitrary (possibly bad) contents."""
    total = 16 + len(headers_block) + len(payload) if total is None else total
    headers_length = len(headers_block) if headers_length is None else headers_length
    prelude = struct.pack(">II", total, headers_length)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers_block + payload
    return body + struct.pack(">I", zlib.crc32(body))


def test_log_parser_found_every_frame(logged: list[LoggedFrame]) -> None:
    lines = [line for line in _trial_log().splitlines() if "->" in line[:4]]
    assert len(logged) == len(lines) == TRIAL_FRAMES
    assert sum(frame.direction == "C->S" for frame in logged) == 8


def test_golden_connect_decodes() -> None:
    message = decode_message(_connect_hex())
    assert message.headers == (
        Header.string(":version", "0.1.0"),
        Header.int32(":message-type", MessageType.CONNECT),
        Header.int32(":message-flags", 0),
        Header.int32(":stream-id", 0),
    )
    assert message.payload == b'{"authToken": "tok-pub"}'
    assert rpc.read_metadata(message) == rpc.RpcMetadata(MessageType.CONNECT, 0, 0, None)


def test_golden_connect_reencodes_byte_identically() -> None:
    golden = _connect_hex()
    assert decode_message(golden).encode() == golden


@pytest.mark.parametrize("index", range(TRIAL_FRAMES))
def test_logged_frame_lengths_and_crcs(logged: list[LoggedFrame], index: int) -> None:
    frame = logged[index]
    payload = frame.payload if frame.complete else bytes(frame.payload_size)
    encoded = encode_message(frame.headers, payload)
    total, headers_length, prelude_crc = _prelude(encoded)
    assert (total, headers_length, prelude_crc) == (
        frame.length,
        frame.headers_length,
        frame.prelude_crc,
    )
    if frame.complete:  # the log cut some error payloads short; their body CRC is unknowable
        assert struct.unpack(">I", encoded[-4:])[0] == frame.message_crc
        assert decode_message(encoded) == Message(frame.headers, frame.payload)


def _logged(
    frames: list[LoggedFrame], direction: str, message_type: int, model_type: str | None = None
) -> LoggedFrame:
    for frame in frames:
        headers = {h.name: h.value for h in frame.headers}
        if (
            frame.direction == direction
            and headers[":message-type"] == message_type
            and headers.get("service-model-type") == model_type
        ):
            return frame
    raise AssertionError(f"no {direction} frame of type {message_type} {model_type}")


def _assert_same_frame(encoded: bytes, logged: LoggedFrame) -> None:
    assert encoded == encode_message(logged.headers, logged.payload)
    assert struct.unpack(">I", encoded[-4:])[0] == logged.message_crc


def test_server_frames_match_the_trial_capture(logged: list[LoggedFrame]) -> None:
    connect_ack = _logged(logged, "S->C", MessageType.CONNECT_ACK)
    _assert_same_frame(rpc.connect_ack(accepted=True), connect_ack)
    ping = decode_message(encode_message(_logged(logged, "C->S", MessageType.PING).headers))
    _assert_same_frame(rpc.ping_response(ping), _logged(logged, "S->C", MessageType.PING_RESPONSE))
    subscribe = "aws.greengrass#SubscribeToTopicResponse"
    _assert_same_frame(
        rpc.application_message(1, subscribe, b"{}", terminate=False),
        _logged(logged, "S->C", MessageType.APPLICATION_MESSAGE, subscribe),
    )
    publish = "aws.greengrass#PublishToTopicResponse"
    _assert_same_frame(
        rpc.application_message(2, publish, b"{}", terminate=True),
        _logged(logged, "S->C", MessageType.APPLICATION_MESSAGE, publish),
    )


def test_client_terminate_stream_frame_is_empty_with_the_flag(logged: list[LoggedFrame]) -> None:
    frames = [f for f in logged if f.direction == "C->S" and f.length == 71]
    closing = next(f for f in frames if dict((h.name, h.value) for h in f.headers)[":stream-id"])
    metadata = rpc.read_metadata(Message(closing.headers, closing.payload))
    assert metadata.flags == MessageFlag.TERMINATE_STREAM
    assert (metadata.message_type, metadata.stream_id, closing.payload) == (0, 1, b"")


def test_every_header_type_round_trips() -> None:
    headers = (
        Header.boolean("yes", True),
        Header.boolean("no", False),
        Header("byte", HeaderType.BYTE, -128),
        Header("int16", HeaderType.INT16, -32768),
        Header.int32("int32", 2**31 - 1),
        Header("int64", HeaderType.INT64, -(2**63)),
        Header("buf", HeaderType.BYTE_BUF, b"\x00\xff"),
        Header.string("string", "héllo"),
        Header("time", HeaderType.TIMESTAMP, 1_700_000_000_123),
        Header("uuid", HeaderType.UUID, uuid.UUID("12345678-1234-5678-1234-567812345678")),
    )
    message = decode_message(encode_message(headers, b"payload"))
    assert message == Message(headers, b"payload")
    assert message.find("STRING") == Header.string("string", "héllo")  # case-insensitive lookup
    assert message.find("absent") is None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (Header.string("x" * 128, "v"), "header name"),
        (Header.int32("n", 2**31), "does not fit"),
        (Header.int32("n", "7"), "needs an int"),
        (Header.string("s", b"bytes"), "wrong value type"),
        (Header.string("s", "x" * 32768), "longer than"),
    ],
)
def test_encoding_refuses_bad_headers(header: Header, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        encode_message((header,))


def _flip(frame: bytes, index: int) -> bytes:
    return frame[:index] + bytes((frame[index] ^ 0x01,)) + frame[index + 1 :]


GOOD = encode_message((Header.string("k", "v"), Header.int32(":stream-id", 1)), b"payload")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_flip(GOOD, 9), "prelude CRC mismatch"),
        (_flip(GOOD, 2), "prelude CRC mismatch"),
        (_flip(GOOD, len(GOOD) - 6), "message CRC mismatch"),
        (_flip(GOOD, len(GOOD) - 1), "message CRC mismatch"),
        (GOOD[:8], "shorter than the prelude"),
        (GOOD + b"\x00", "but the frame has"),
        (_raw_frame(b"", total=12), "shorter than the 16-byte minimum"),
        (_raw_frame(b"", b"xyz", headers_length=4), "does not fit"),
        (_raw_frame(b"\x05ab"), "header name runs past"),
        (_raw_frame(b"\x01k\x0a"), "unknown type code 10"),
        (_raw_frame(b"\x01k\x04\x00\x00"), "value of header 'k' runs past"),
        (_raw_frame(b"\x01k\x07\x00\x05ab"), "value of header 'k' runs past"),
        (_raw_frame(b"\x01k\x07\x00\x02\xff\xfe"), "not valid UTF-8"),
        (_raw_frame(b"\x02\xff\xfe\x00"), "header name is not valid UTF-8"),
    ],
)
def test_corrupt_frames_are_rejected(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_message(frame)


def test_decoder_splits_a_byte_stream() -> None:
    first = encode_message((Header.int32(":stream-id", 1),), b"one")
    second = encode_message((Header.int32(":stream-id", 2),), b"two")
    decoder = FrameDecoder()
    seen: list[Message] = []
    for byte in first + second:
        seen.extend(decoder.feed(bytes((byte,))))
    assert [m.payload for m in seen] == [b"one", b"two"]
    assert decoder.pending == 0
    assert decoder.expected == 0
    assert [m.payload for m in decoder.feed(first + second[:11])] == [b"one"]
    assert decoder.pending == 11 and decoder.expected == 0  # no whole prelude yet
    assert decoder.feed(second[11:20]) == []
    assert decoder.pending == 20 and decoder.expected == len(second)


def test_decoder_rejects_a_huge_length_before_buffering_it() -> None:
    prelude = struct.pack(">II", MAX_MESSAGE_SIZE + 1, 0)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(FrameError, match="over the"):
        FrameDecoder().feed(prelude)


def test_decoder_rejects_a_corrupt_prelude_immediately() -> None:
    with pytest.raises(FrameError, match="prelude CRC"):
        FrameDecoder().feed(_flip(GOOD, 1)[:12])

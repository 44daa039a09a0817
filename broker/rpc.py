"""Event-stream RPC on top of the framing: reading the routing headers, building server frames.

Header order follows aws-c-event-stream, which the Nucleus sends through: the caller's headers
first, then ``:message-type``, ``:message-flags`` and ``:stream-id`` (see the trial capture).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeboost.runtime.eventstream import (
    Header,
    HeaderType,
    Message,
    MessageFlag,
    MessageType,
    encode_message,
)

__all__ = [
    "CONTENT_TYPE",
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_TEXT",
    "MESSAGE_FLAGS",
    "MESSAGE_TYPE",
    "OPERATION",
    "PROTOCOL_VERSION",
    "SERVICE_MODEL_TYPE",
    "STREAM_ID",
    "VERSION",
    "ProtocolViolation",
    "RpcMetadata",
    "application_error",
    "application_message",
    "connect_ack",
    "connection_error",
    "dump_json",
    "internal_server_error",
    "ping_response",
    "read_metadata",
    "server_frame",
]

MESSAGE_TYPE = ":message-type"
MESSAGE_FLAGS = ":message-flags"
STREAM_ID = ":stream-id"
VERSION = ":version"
CONTENT_TYPE = ":content-type"
OPERATION = "operation"
SERVICE_MODEL_TYPE = "service-model-type"
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_TEXT = "text/plain"
PROTOCOL_VERSION = "0.1.0"

_INT32_MAX = 2**31 - 1


class ProtocolViolation(Exception):
    """The peer broke the RPC rules; the connection gets a PROTOCOL_ERROR and is closed."""


@dataclass(frozen=True, slots=True)
class RpcMetadata:
    """The routing headers every RPC frame must carry."""

    message_type: int
    flags: int
    stream_id: int
    operation: str | None


def read_metadata(message: Message) -> RpcMetadata:
    """Extract the routing headers; each must be present with the right type."""

    def int32(name: str) -> int:
        header = message.find(name)
        if header is None or header.type is not HeaderType.INT32:
            raise ProtocolViolation(
                "every message needs :message-type, :message-flags and :stream-id as INT32 headers"
            )
        assert isinstance(header.value, int)
        return header.value

    message_type, flags, stream_id = int32(MESSAGE_TYPE), int32(MESSAGE_FLAGS), int32(STREAM_ID)
    if not 0 <= stream_id <= _INT32_MAX:
        raise ProtocolViolation(f"stream id {stream_id} is outside 0..INT32_MAX")
    operation = message.find(OPERATION)
    name = (
        operation.value if operation is not None and operation.type is HeaderType.STRING else None
    )
    assert name is None or isinstance(name, str)
    return RpcMetadata(message_type, flags, stream_id, name)


def dump_json(document: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the way the Nucleus's Gson writes it."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def server_frame(
    message_type: MessageType,
    *,
    flags: int = MessageFlag.NONE,
    stream_id: int = 0,
    headers: Sequence[Header] = (),
    payload: bytes = b"",
) -> bytes:
    """Encode a frame with the caller's headers followed by the three routing headers."""
    routing = (
        Header.int32(MESSAGE_TYPE, int(message_type)),
        Header.int32(MESSAGE_FLAGS, int(flags)),
        Header.int32(STREAM_ID, stream_id),
    )
    return encode_message((*headers, *routing), payload)


def _json_headers(model_type: str) -> tuple[Header, ...]:
    return (
        Header.string(CONTENT_TYPE, CONTENT_TYPE_JSON),
        Header.string(SERVICE_MODEL_TYPE, model_type),
    )


def connect_ack(accepted: bool) -> bytes:
    flags = MessageFlag.CONNECTION_ACCEPTED if accepted else MessageFlag.NONE
    return server_frame(MessageType.CONNECT_ACK, flags=flags)


def ping_response(ping: Message) -> bytes:
    """Echo a PING's own (non-``:``) headers and payload, as the Nucleus does."""
    echoed = tuple(h for h in ping.headers if not h.name.startswith(":"))
    return server_frame(MessageType.PING_RESPONSE, headers=echoed, payload=ping.payload)


def application_message(
    stream_id: int, model_type: str, payload: bytes, *, terminate: bool
) -> bytes:
    flags = MessageFlag.TERMINATE_STREAM if terminate else MessageFlag.NONE
    return server_frame(
        MessageType.APPLICATION_MESSAGE,
        flags=flags,
        stream_id=stream_id,
        headers=_json_headers(model_type),
        payload=payload,
    )


def application_error(stream_id: int, model_type: str, payload: bytes) -> bytes:
    """A modeled error; it always ends the stream."""
    return server_frame(
        MessageType.APPLICATION_ERROR,
        flags=MessageFlag.TERMINATE_STREAM,
        stream_id=stream_id,
        headers=_json_headers(model_type),
        payload=payload,
    )


def internal_server_error(stream_id: int) -> bytes:
    """What the Nucleus sends when a handler fails unexpectedly (for example on a request it
    cannot deserialize): plain text, no service-model-type, stream terminated."""
    return server_frame(
        MessageType.APPLICATION_ERROR,
        flags=MessageFlag.TERMINATE_STREAM,
        stream_id=stream_id,
        headers=(Header.string(CONTENT_TYPE, CONTENT_TYPE_TEXT),),
        payload=b"InternalServerError",
    )


def connection_error(message: str, *, internal: bool = False) -> bytes:
    """A connection-level PROTOCOL_ERROR (or INTERNAL_ERROR); the server closes afterwards."""
    kind = MessageType.INTERNAL_ERROR if internal else MessageType.PROTOCOL_ERROR
    return server_frame(
        kind,
        headers=(Header.string(CONTENT_TYPE, CONTENT_TYPE_JSON),),
        payload=dump_json({"message": message}),
    )

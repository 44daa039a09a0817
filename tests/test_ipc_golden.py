"""Golden server-to-client frames: the broker's against nucleus lite's, captured from both at test
time with the same raw client (nothing captured is committed).

One session against each server: CONNECT, SubscribeToTopic, a JSON and a binary publish that
are delivered, an unauthorized subscribe and a refused CONNECT. Frames whose content is
deterministic must be identical byte for byte; every difference is listed in DIFFERENCES with
the reason it stays (the broker follows the Java Nucleus where nucleus lite departs from it; see
broker/__init__.py). A difference that appears, or one that goes away, fails the test.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from edgeboost.runtime.eventstream import MessageFlag, MessageType

from .greengrass_lite import LISTENER, STRANGER, TALKER
from .ipc_servers import BROKER, LITE, PUBLISH, SUBSCRIBE, IpcServer
from .raw_ipc import Closed, Frame, RawIpc

TOPIC = "test/golden"
# Strings, booleans and null only, keys already sorted: numbers and key order are differences of
# their own (test_ipc_servers.py), kept out of the frame that has to match byte for byte.
JSON_BODY = {"flag": True, "list": ["a", "b"], "nothing": None, "text": "golden"}
BINARY_BODY = b"golden \x00\xff bytes"

_ORDER = "header order: the broker writes aws-c-event-stream's (the Java Nucleus's transport: "
_ORDER += "the frame's own headers, then :message-type, :message-flags, :stream-id; "
_ORDER += "s_send_protocol_message); nucleus lite writes the three routing headers first"
_TEXT = "the error text: the broker has the Java Nucleus's AuthorizationHandler wording, "
_TEXT += "nucleus lite says 'IPC Operation not authorized.'"
_SHAPE = "the Java model's error shape (EventStreamOperationError plus the modeled 'message' "
_SHAPE += "member, which the SDK reads as e.message); nucleus lite sends _message/_errorCode only"
DIFFERENCES: dict[str, dict[str, str]] = {
    "connect_ack": {},
    "subscribe_response": {"header order": _ORDER},
    "publish_response": {
        "header order": _ORDER,
        "header :message-flags": "the Java Nucleus ends a non-streaming operation's stream with "
        "its response (OperationContinuationHandler: sendMessage(result, !isStreamingOperation())"
        "); nucleus lite leaves PublishToTopic's stream open (flags 0)",
    },
    "json_event": {"header order": _ORDER},
    "binary_event": {"header order": _ORDER},
    "unauthorized_subscribe": {
        "header order": _ORDER,
        "payload _message": _TEXT,
        "payload message": _SHAPE,
        "payload _service": _SHAPE,
    },
    "refused_connect": {
        "frame": "the Java Nucleus answers a refused CONNECT with a CONNECT_ACK without the "
        "accepted flag, then closes (ServiceOperationMappingContinuationHandler.onConnectRequest);"
        " nucleus lite closes without a CONNECT_ACK",
    },
}


def capture(server: IpcServer) -> dict[str, Frame | None]:
    """The server-to-client frames of one scripted session."""
    frames: dict[str, Frame | None] = {}
    with (
        RawIpc(server.socket_path) as listener,
        server.raw(TALKER) as talker,
        server.raw(STRANGER) as stranger,
    ):
        frames["connect_ack"] = listener.connect(server.token(LISTENER))
        subscription = listener.call(SUBSCRIBE, {"topic": TOPIC})
        frames["subscribe_response"] = listener.receive_on(subscription)
        stream = talker.call(PUBLISH, _publish({"jsonMessage": {"message": JSON_BODY}}))
        frames["publish_response"] = talker.receive_on(stream)
        frames["json_event"] = listener.receive_on(subscription)
        encoded = base64.b64encode(BINARY_BODY).decode()
        stream = talker.call(PUBLISH, _publish({"binaryMessage": {"message": encoded}}))
        talker.receive_on(stream)
        frames["binary_event"] = listener.receive_on(subscription)
        stream = stranger.call(SUBSCRIBE, {"topic": TOPIC})
        frames["unauthorized_subscribe"] = stranger.receive_on(stream)
    with RawIpc(server.socket_path) as refused:
        try:
            frames["refused_connect"] = refused.connect("not-a-token")
        except Closed:
            frames["refused_connect"] = None
        assert refused.closed_by_server(), f"{server}: a refused CONNECT leaves it open"
    return frames


def _publish(message: dict[str, Any]) -> dict[str, Any]:
    return {"topic": TOPIC, "publishMessage": message}


def differences(broker: Frame | None, lite: Frame | None) -> set[str]:
    """What differs between two frames: nothing when they are identical byte for byte; else
    header by header, then the payload byte for byte or, for JSON objects, key by key."""
    if broker is None or lite is None:
        return set() if broker is lite else {"frame"}
    if broker.raw == lite.raw:
        return set()
    found = set()
    ours, theirs = broker.message.headers, lite.message.headers
    if [h.name for h in ours] != [h.name for h in theirs]:
        found.add("header order")
    ours_by_name = {h.name: (h.type, h.value) for h in ours}
    theirs_by_name = {h.name: (h.type, h.value) for h in theirs}
    for name in ours_by_name.keys() | theirs_by_name.keys():
        if ours_by_name.get(name) != theirs_by_name.get(name):
            found.add(f"header {name}")
    if broker.message.payload != lite.message.payload:
        found |= _payload_differences(broker.message.payload, lite.message.payload)
    return found


def _payload_differences(ours: bytes, theirs: bytes) -> set[str]:
    """Top-level keys whose values are written differently (7 and 7.0, or the same keys in
    another order, differ here), or "payload" when the two are not both JSON objects."""
    try:
        mine, other = json.loads(ours), json.loads(theirs)
    except ValueError:
        return {"payload"}
    if not (isinstance(mine, dict) and isinstance(other, dict)):
        return {"payload"}
    found = {
        f"payload {key}"
        for key in mine.keys() | other.keys()
        if _written(mine.get(key, ...)) != _written(other.get(key, ...))
    }
    return found or {"payload"}  # the same values, written apart (key order, spacing)


def _written(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if value is not ... else "(absent)"


def test_golden_frames_match_nucleus_lite(
    broker_server: IpcServer, lite_ipc_server: IpcServer
) -> None:
    ours, theirs = capture(broker_server), capture(lite_ipc_server)
    found = {name: differences(ours[name], theirs[name]) for name in DIFFERENCES}
    expected = {name: set(reasons) for name, reasons in DIFFERENCES.items()}
    assert found == expected

    # What the differences leave equal is also right in itself, so the two servers cannot
    # agree on a wrong frame.
    ack = ours["connect_ack"]
    assert ack is not None and ack.raw == _only(theirs["connect_ack"]).raw
    assert (ack.type, ack.flags, ack.stream_id) == (MessageType.CONNECT_ACK, 1, 0)
    assert ack.message.payload == b""
    for name in ("json_event", "binary_event"):
        assert _canonical(_only(ours[name])) == _canonical(_only(theirs[name]))
    event = _only(ours["json_event"])
    assert event.model_type == "aws.greengrass#SubscriptionResponseMessage"
    assert (
        event.message.payload
        == json.dumps(
            {"jsonMessage": {"message": JSON_BODY, "context": {"topic": TOPIC}}},
            separators=(",", ":"),
        ).encode()
    )
    binary = _only(theirs["binary_event"]).json()["binaryMessage"]
    assert base64.b64decode(binary["message"]) == BINARY_BODY
    for server, frames in ((BROKER, ours), (LITE, theirs)):
        subscribed = _only(frames["subscribe_response"])
        assert subscribed.flags == 0, f"{server}: the subscription stream must stay open"
        assert subscribed.model_type == "aws.greengrass#SubscribeToTopicResponse"
        assert subscribed.message.payload == b"{}"
        refused = _only(frames["unauthorized_subscribe"])
        assert (refused.type, refused.flags) == (
            MessageType.APPLICATION_ERROR,
            MessageFlag.TERMINATE_STREAM,
        )
        assert refused.model_type == "aws.greengrass#UnauthorizedError"
        assert refused.json()["_errorCode"] == "UnauthorizedError"
    assert _only(ours["publish_response"]).flags == MessageFlag.TERMINATE_STREAM
    assert [h.name for h in _only(ours["subscribe_response"]).message.headers][-3:] == [
        *(":message-type", ":message-flags", ":stream-id")
    ]
    assert [h.name for h in _only(theirs["subscribe_response"]).message.headers][:3] == [
        *(":message-type", ":message-flags", ":stream-id")
    ]
    refused_ack = _only(ours["refused_connect"])
    assert (refused_ack.type, refused_ack.flags) == (MessageType.CONNECT_ACK, 0)
    assert theirs["refused_connect"] is None


def _only(frame: Frame | None) -> Frame:
    assert frame is not None
    return frame


def _canonical(frame: Frame) -> tuple[Any, ...]:
    """A frame with its header order set aside: the only difference the events may have."""
    headers = sorted((h.name, h.type, h.value) for h in frame.message.headers)
    return (tuple(headers), frame.message.payload)

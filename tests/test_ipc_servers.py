"""Where the broker and nucleus lite differ, and where they must not: each test runs against both
(raw frames, so nothing but the server is measured) and states what each one does.

Where the two differ, the broker keeps to the Java Nucleus; the evidence (its source, and what
nucleus lite was seen to do) is in broker/__init__.py, and the golden frames are compared in
test_ipc_golden.py.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeboost.broker.greengrass_lite import access_control
from edgeboost.runtime.eventstream import MessageFlag, MessageType

from . import ipc_servers
from .conftest import need
from .greengrass_lite import LISTENER, TALKER, TEST_COMPONENTS, GreengrassLite
from .ipc_client import Client, ipc
from .ipc_servers import BROKER, LITE, PUBLISH, SUBSCRIBE, IpcServer
from .raw_ipc import Closed, Frame, RawIpc

FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"


def publish_request(topic: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"topic": topic, "publishMessage": message}


def json_message(body: Any) -> dict[str, Any]:
    return {"jsonMessage": {"message": body}}


def binary_message(data: bytes) -> dict[str, Any]:
    return {"binaryMessage": {"message": base64.b64encode(data).decode()}}


def outcome(frame: Frame) -> str:
    """A reply in one word: the model type of a response or modeled error, InternalServerError,
    or the connection-level message type."""
    if frame.type == MessageType.APPLICATION_ERROR and frame.model_type is None:
        assert frame.message.payload == b"InternalServerError"
        return "InternalServerError"
    if frame.type in (MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR):
        assert frame.model_type is not None
        return frame.model_type.removeprefix("aws.greengrass#")
    return MessageType(frame.type).name


def subscribed(client: RawIpc, topic: str, **options: str) -> int:
    stream = client.call(SUBSCRIBE, {"topic": topic, **options})
    assert outcome(client.receive_on(stream)) == "SubscribeToTopicResponse"
    return stream


def publish(client: RawIpc, topic: str, message: dict[str, Any]) -> str:
    stream = client.call(PUBLISH, publish_request(topic, message))
    return outcome(client.receive_on(stream))


# --- where the two agree --------------------------------------------------------------------
def test_json_and_binary_together_is_a_service_error(ipc_server: IpcServer) -> None:
    with ipc_server.raw(TALKER) as talker:
        both = {**json_message({}), **binary_message(b"")}
        stream = talker.call(PUBLISH, publish_request("test/servers-both", both))
        reply = talker.receive_on(stream)
        assert outcome(reply) == "ServiceError"
        assert reply.flags == MessageFlag.TERMINATE_STREAM
        assert publish(talker, "test/servers-both", json_message({})) == "PublishToTopicResponse"


# --- ordering -------------------------------------------------------------------------------
def test_a_publishers_own_event_and_its_response_come_in_either_order(
    ipc_server: IpcServer,
) -> None:
    """The broker always answers the publish first; nucleus lite races the two (as the Java
    Nucleus does), and sends the response first often enough that the broker's order is one a
    client meets on a real server. A client that waits for its own event before its publish
    completes breaks on the broker every time instead of on the device now and then."""
    topic = "test/servers-order"
    with ipc_server.raw(TALKER) as talker:
        subscription = subscribed(talker, topic)
        orders = []
        for _ in range(200):
            stream = talker.call(PUBLISH, publish_request(topic, json_message({"n": "x"})))
            first, second = talker.receive(), talker.receive()
            assert {first.stream_id, second.stream_id} == {stream, subscription}
            assert outcome(second if first.stream_id == stream else first) == (
                "SubscriptionResponseMessage"
            )
            orders.append("response first" if first.stream_id == stream else "event first")
            if ipc_server.kind == LITE and "response first" in orders:
                break
        if ipc_server.kind == BROKER:
            assert set(orders) == {"response first"}
        else:
            assert "response first" in orders, f"200 publishes, all {orders[0]}"


# --- JSON numbers and key order -------------------------------------------------------------
EVENT_BODY = {
    # As the Java Nucleus writes them: Gson reads a Map<String, Object>'s numbers as doubles and
    # keeps its keys in order.
    BROKER: b'{"x":0.1,"n":7.0}',
    # Integers stay integers, doubles get 17 significant digits, keys come sorted.
    LITE: b'{"n":7,"x":0.10000000000000001}',
}


def test_json_numbers_and_key_order(ipc_server: IpcServer) -> None:
    topic = "test/servers-numbers"
    with ipc_server.raw(LISTENER) as listener, ipc_server.raw(TALKER) as talker:
        subscription = subscribed(listener, topic)
        body = {"x": 0.1, "n": 7}
        assert publish(talker, topic, json_message(body)) == "PublishToTopicResponse"
        event = listener.receive_on(subscription)
    expected = b'{"jsonMessage":{"message":%s,"context":{"topic":"%s"}}}' % (
        EVENT_BODY[ipc_server.kind],
        topic.encode(),
    )
    assert event.message.payload == expected


# --- errors ---------------------------------------------------------------------------------
DENIAL = (
    "Principal com.example.Talker is not authorized to perform "
    "aws.greengrass.ipc.pubsub:aws.greengrass#PublishToTopic on resource other/x"
)
ERROR_PAYLOAD = {
    BROKER: {
        "message": DENIAL,
        "_service": "aws.greengrass#GreengrassCoreIPC",
        "_message": DENIAL,
        "_errorCode": "UnauthorizedError",
    },
    LITE: {"_message": "IPC Operation not authorized.", "_errorCode": "UnauthorizedError"},
}
# A request that is both unauthorized and invalid: the Java Nucleus authorizes first.
UNAUTHORIZED_AND_INVALID = {BROKER: "UnauthorizedError", LITE: "ServiceError"}


def test_error_payloads(ipc_server: IpcServer) -> None:
    with ipc_server.raw(TALKER) as talker:
        stream = talker.call(PUBLISH, publish_request("other/x", json_message({})))
        reply = talker.receive_on(stream)
        assert outcome(reply) == "UnauthorizedError"
        assert reply.json() == ERROR_PAYLOAD[ipc_server.kind]
        both = {**json_message({}), **binary_message(b"")}
        stream = talker.call(PUBLISH, publish_request("other/x", both))
        assert outcome(talker.receive_on(stream)) == UNAUTHORIZED_AND_INVALID[ipc_server.kind]


def test_what_the_sdk_shows_of_an_error(ipc_server: IpcServer) -> None:
    need(ipc is not None, "awsiotsdk (pip install awsiotsdk)")
    from awsiot.greengrasscoreipc.model import UnauthorizedError

    client = Client(ipc_server.socket_path, ipc_server.token(TALKER))
    try:
        with pytest.raises(UnauthorizedError) as refused:
            client.publish("other/x", {})
    finally:
        client.close()
    assert refused.value.message == {BROKER: DENIAL, LITE: None}[ipc_server.kind]


EMPTY_TOPIC = {
    # (component, request): (broker, nucleus lite)
    (TALKER, '{"topic": ""}'): ("UnauthorizedError", "UnauthorizedError"),
    (LISTENER, '{"topic": ""}'): ("UnauthorizedError", "ServiceError"),  # LISTENER may use "*"
    (LISTENER, "{}"): ("InvalidArgumentsError", "ServiceError"),
}


@pytest.mark.parametrize(("component", "request_"), list(EMPTY_TOPIC))
def test_subscribe_to_an_empty_or_missing_topic(
    ipc_server: IpcServer, component: str, request_: str
) -> None:
    with ipc_server.raw(component) as client:
        stream = client.call(SUBSCRIBE, request_.encode())
        reply = client.receive_on(stream)
    expected = EMPTY_TOPIC[component, request_][ipc_server.kind == LITE]
    assert outcome(reply) == expected
    if ipc_server.kind == BROKER and request_ != "{}":
        assert reply.json()["message"] == "Resource cannot be empty"


# --- what nucleus lite lets through and the broker refuses ----------------------------------
ODD_PUBLISHES = {
    "a topic with #": ("test/servers-odd#", json_message({"h": "#"}), "InvalidArgumentsError"),
    "a jsonMessage that is an array": ("test/servers-odd", json_message([1, 2]), "Internal"),
    "a binaryMessage not in base64": (
        "test/servers-odd",
        {"binaryMessage": {"message": "!!not base64"}},
        "Internal",
    ),
}


@pytest.mark.parametrize("case", list(ODD_PUBLISHES))
def test_publishes_nucleus_lite_delivers_and_the_broker_refuses(
    ipc_server: IpcServer, case: str
) -> None:
    topic, message, broker_error = ODD_PUBLISHES[case]
    with ipc_server.raw(LISTENER) as listener, ipc_server.raw(TALKER) as talker:
        subscription = subscribed(listener, "test/+")
        reply = publish(talker, topic, message)
        if ipc_server.kind == BROKER:
            assert reply.startswith(broker_error)
            assert listener.nothing_arrives(0.3)
            return
        assert reply == "PublishToTopicResponse"
        event = listener.receive_on(subscription).json()
    (kind,) = message
    assert event == {kind: {**message[kind], "context": {"topic": topic}}}  # passed on as is


# --- receiveMode ----------------------------------------------------------------------------
def test_receive_messages_from_others(ipc_server: IpcServer) -> None:
    topic = "test/servers-others"
    with ipc_server.raw(TALKER) as talker, ipc_server.raw(LISTENER) as listener:
        subscribed(talker, topic, receiveMode=FROM_OTHERS)
        assert publish(talker, topic, json_message({"from": "self"})) == "PublishToTopicResponse"
        # A second subscriber as a marker: once it has the message, the first had its chance.
        marker = subscribed(listener, topic)
        assert publish(talker, topic, json_message({"from": "self"})) == "PublishToTopicResponse"
        listener.receive_on(marker)
        got_own = not talker.nothing_arrives(0.3)
    assert got_own == (ipc_server.kind == LITE), "nucleus lite ignores receiveMode"


# --- payload limits -------------------------------------------------------------------------
def test_a_message_over_10000_bytes(ipc_server: IpcServer) -> None:
    """Nucleus lite's GGL_IPC_MAX_MSG_LEN is 10,000 bytes a frame, and a bigger one closes the
    connection; the Java Nucleus takes frames up to aws-c-event-stream's 16 MiB."""
    topic = "test/servers-size"
    data = bytes(range(256)) * 40  # 10,240 bytes; base64 makes the frame ~13.8 KB
    with ipc_server.raw(LISTENER) as listener, ipc_server.raw(TALKER) as talker:
        subscription = subscribed(listener, topic)
        if ipc_server.kind == LITE:
            talker.call(PUBLISH, publish_request(topic, binary_message(data)))
            assert talker.closed_by_server()
            return
        for size in (len(data), 1 << 20):
            payload = (data * (size // len(data) + 1))[:size]
            assert publish(talker, topic, binary_message(payload)) == "PublishToTopicResponse"
            event = listener.receive_on(subscription).json()
            assert base64.b64decode(event["binaryMessage"]["message"]) == payload


# --- the connection -------------------------------------------------------------------------
def test_a_new_stream_id_that_skips_one(ipc_server: IpcServer) -> None:
    """aws-c-event-stream (the Java Nucleus's transport) refuses a new stream id that is not the
    last one plus one with a PROTOCOL_ERROR and closes; nucleus lite serves it."""
    with ipc_server.raw(TALKER) as talker:
        talker.call(SUBSCRIBE, {"topic": "test/servers-ids"}, stream_id=1)
        talker.receive_on(1)
        talker.call(SUBSCRIBE, {"topic": "test/servers-ids"}, stream_id=3)
        reply = talker.receive()
        if ipc_server.kind == LITE:
            assert (outcome(reply), reply.stream_id) == ("SubscribeToTopicResponse", 3)
            return
        assert outcome(reply) == "PROTOCOL_ERROR"
        assert talker.closed_by_server()


# --- tokens ---------------------------------------------------------------------------------
@pytest.fixture(params=[BROKER, LITE])
def restartable(request: pytest.FixtureRequest) -> Iterator[tuple[IpcServer, Callable[[], str]]]:
    """(server, restart): restart() restarts the IPC server and returns TALKER's new token.
    The broker runs as `edgeboost broker` with a recipe and no token, so it issues its own."""
    if request.param == LITE:
        lite: GreengrassLite = request.getfixturevalue("greengrass_lite")

        def restart_lite() -> str:
            lite.restart_ipc()
            return lite.token(TALKER)

        yield ipc_servers.lite_server(lite), restart_lite
        return
    with tempfile.TemporaryDirectory(prefix="eb-") as folder:
        cli = BrokerCli(Path(folder))
        tokens = [cli.start()]

        def restart_broker() -> str:
            tokens.append(cli.restart())
            return tokens[-1]

        try:
            yield IpcServer(BROKER, str(cli.socket), lambda _: tokens[0]), restart_broker
        finally:
            cli.stop()


def test_a_token_from_before_a_restart_is_refused(
    restartable: tuple[IpcServer, Callable[[], str]],
) -> None:
    """Both the Java Nucleus (AuthenticationHandler.registerAuthenticationToken, at every start;
    tokens live under _AUTHENTICATION_TOKENS, which is never written to disk) and nucleus lite
    (ggipcd, in memory) issue new tokens when they start again."""
    server, restart = restartable
    old = server.token(TALKER)
    new = restart()
    assert new != old
    with RawIpc(server.socket_path) as client:
        try:
            ack: Frame | None = client.connect(old)
        except Closed:
            ack = None
        assert ack is None or ack.flags == 0
    with RawIpc(server.socket_path) as client:
        assert client.connect(new).flags == MessageFlag.CONNECTION_ACCEPTED


class BrokerCli:
    """`python -m edgeboost.broker` serving TALKER from a recipe, with a token it generates."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "ipc.sock"
        self.recipe = folder / "talker.json"
        policy = access_control(TEST_COMPONENTS[0])
        self.recipe.write_text(
            json.dumps(
                {
                    "RecipeFormatVersion": "2020-01-25",
                    "ComponentName": TALKER,
                    "ComponentVersion": "1.0.0",
                    "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": policy}},
                }
            )
        )
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        command = [sys.executable, "-m", "edgeboost.broker", "--socket", str(self.socket)]
        command += ["--recipe", str(self.recipe)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            found = re.search(r"SVCUID=(\S+)", line)
            if found:
                return found.group(1)
            assert line, "the broker exited without printing a token"
        raise AssertionError("the broker printed no token")

    def restart(self) -> str:
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.communicate(timeout=10)
            self.process = None

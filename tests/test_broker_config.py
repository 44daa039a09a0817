"""Configuration and state: GetConfiguration, UpdateConfiguration, SubscribeToConfigurationUpdate
and UpdateState, on the broker and on nucleus lite (``config_server``: a new one per test).

The broker follows the Java Nucleus (ConfigStoreIPCEventStreamAgent, LifecycleIPCEventStreamAgent,
com.aws.greengrass.config); where nucleus lite differs, each test says what each one does. The
scenario they are written for: an inference component (STRANGER here, granted nothing: none of
these operations is authorized) reads a model component's Bundle, watches it, and a deployment
of a new model version (MODEL's own UpdateConfiguration) reaches it.
"""

from __future__ import annotations

import datetime
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeboost.broker import Broker, ComponentPolicy
from edgeboost.broker.config_operations import _epoch_millis
from edgeboost.broker.configuration import MAX_DEPTH, ConfigStore, fold, json_document
from edgeboost.broker.errors import MalformedRequest
from edgeboost.runtime.eventstream import MessageFlag, MessageType

from .conftest import need
from .greengrass_lite import MODEL, STRANGER, TALKER
from .ipc_client import ipc
from .ipc_servers import BROKER, LITE, IpcServer
from .raw_ipc import Frame, RawIpc, connected, frame_bytes

GET = "aws.greengrass#GetConfiguration"
UPDATE = "aws.greengrass#UpdateConfiguration"
WATCH = "aws.greengrass#SubscribeToConfigurationUpdate"
STATE = "aws.greengrass#UpdateState"
QUIET = 0.3  # seconds to wait for an event that must not come

# Nucleus lite's defaults come from its YAML config file, where every scalar is a string.
QUEUE_SIZE = {BROKER: 99, LITE: "99"}
# A response ends its stream on the Java Nucleus (OCH: sendMessage(result,
# !isStreamingOperation())); nucleus lite leaves it open, as for PublishToTopic.
RESPONSE_FLAGS = {BROKER: MessageFlag.TERMINATE_STREAM, LITE: 0}


def outcome(frame: Frame) -> str:
    if frame.type == MessageType.APPLICATION_ERROR and frame.model_type is None:
        return frame.message.payload.decode()  # InternalServerError
    assert frame.model_type is not None
    return frame.model_type.removeprefix("aws.greengrass#")


def get(client: RawIpc, request: dict[str, Any]) -> Frame:
    return client.receive_on(client.call(GET, request))


def update(
    client: RawIpc, key_path: list[str], value: Any, timestamp: Any = None, **extra: Any
) -> Frame:
    request = {"keyPath": key_path, "valueToMerge": value, **extra}
    request["timestamp"] = time.time() if timestamp is None else timestamp
    return client.receive_on(client.call(UPDATE, request))


def watch(client: RawIpc, key_path: list[str], component: str | None = None) -> int:
    request: dict[str, Any] = {"keyPath": key_path}
    if component is not None:
        request["componentName"] = component
    stream = client.call(WATCH, request)
    response = client.receive_on(stream)
    assert outcome(response) == "SubscribeToConfigurationUpdateResponse"
    assert response.flags == 0  # the stream stays open
    return stream


def events(client: RawIpc, stream: int, component: str, count: int) -> list[list[str]]:
    """The key paths of the next ``count`` events on ``stream``."""
    paths = []
    for _ in range(count):
        frame = client.receive_on(stream)
        assert outcome(frame) == "ConfigurationUpdateEvents"
        event = frame.json()["configurationUpdateEvent"]
        assert event["componentName"] == component
        paths.append(event["keyPath"])
    return paths


def quiet(client: RawIpc, stream: int) -> bool:
    try:
        client.receive_on(stream, QUIET)
    except TimeoutError:
        return True
    return False


def value(client: RawIpc, component: str, key_path: list[str]) -> Any:
    reply = get(client, {"componentName": component, "keyPath": key_path})
    assert outcome(reply) == "GetConfigurationResponse", reply.json()
    return reply.json()["value"]


# --- reading ----------------------------------------------------------------------------------
def test_any_component_reads_any_configuration(config_server: IpcServer) -> None:
    """GetConfigurationOperationHandler: a leaf comes wrapped in its own key, a container as
    its contents; no componentName means the caller's own."""
    with config_server.raw(STRANGER) as reader:  # granted nothing at all
        leaf = get(reader, {"componentName": MODEL, "keyPath": ["QueueSize"]})
        assert outcome(leaf) == "GetConfigurationResponse"
        assert leaf.flags == RESPONSE_FLAGS[config_server.kind]
        assert leaf.json() == {
            "componentName": MODEL,
            "value": {"QueueSize": QUEUE_SIZE[config_server.kind]},
        }
        bundle = {"Version": "1.0.0", "Path": "models/wine/1"}
        assert value(reader, MODEL, ["Bundle"]) == bundle
        own = get(reader, {})
        assert own.json() == {
            "componentName": STRANGER,
            "value": {"accessControl": {"aws.greengrass.ipc.pubsub": {}}},
        }
        whole = value(reader, MODEL, [])
    assert whole == {
        "Bundle": bundle,
        "QueueSize": QUEUE_SIZE[config_server.kind],
        "accessControl": {"aws.greengrass.ipc.pubsub": {}},
    }
    # The Java Nucleus answers with a TreeMap in String.CASE_INSENSITIVE_ORDER (Topics.toPOJO);
    # nucleus lite in the order the keys were written.
    order = {BROKER: ["accessControl", "Bundle", "QueueSize"], LITE: ["Bundle", "QueueSize"]}
    assert [key for key in whole if key in order[config_server.kind]] == order[config_server.kind]


NOT_FOUND = {
    BROKER: {
        "message": "Key not found",
        "_service": "aws.greengrass#GreengrassCoreIPC",
        "_message": "Key not found",
        "_errorCode": "ResourceNotFoundError",
    },
    LITE: {"_message": "Key not found.", "_errorCode": "ResourceNotFoundError"},
}


@pytest.mark.parametrize(
    "request_",
    [
        {"componentName": MODEL, "keyPath": ["Nope"]},
        {"componentName": MODEL, "keyPath": ["QueueSize", "Max"]},  # below a leaf
        {"componentName": "com.example.Nobody", "keyPath": []},
    ],
    ids=["key", "below-a-leaf", "component"],
)
def test_what_does_not_exist_is_resource_not_found(
    config_server: IpcServer, request_: dict[str, Any]
) -> None:
    with config_server.raw(STRANGER) as reader:
        reply = get(reader, request_)
        assert outcome(reply) == "ResourceNotFoundError"
        assert reply.json() == NOT_FOUND[config_server.kind]
        request_ = {"componentName": request_["componentName"], "keyPath": request_["keyPath"]}
        reply = reader.receive_on(reader.call(WATCH, request_))
        assert outcome(reply) == "ResourceNotFoundError"


def test_keys_and_components_are_case_insensitive_on_the_broker(config_server: IpcServer) -> None:
    """The Java Nucleus finds both through CaseInsensitiveString (Topics.findNode, and
    Kernel.findServiceTopic); it answers with the key as stored and the component as asked.
    Nucleus lite matches them exactly."""
    with config_server.raw(STRANGER) as reader:
        for component, key in ((MODEL, "queuesize"), (MODEL.lower(), "QueueSize")):
            reply = get(reader, {"componentName": component, "keyPath": [key]})
            if config_server.kind == LITE:
                assert outcome(reply) == "ResourceNotFoundError"
                continue
            assert reply.json() == {"componentName": component, "value": {"QueueSize": 99}}


# --- a deployment reaches the watchers --------------------------------------------------------
def test_a_new_model_version_reaches_every_watcher(config_server: IpcServer) -> None:
    """Each changed leaf is reported with its own key path, to watchers of it or of anything
    above it (ConfigurationUpdateOperationHandler.handleConfigNodeUpdate)."""
    with config_server.raw(STRANGER) as inference, config_server.raw(MODEL) as deployment:
        on_bundle = watch(inference, ["Bundle"], MODEL)
        on_everything = watch(inference, [], MODEL)
        on_queue = watch(inference, ["QueueSize"], MODEL)
        new_version = {"Version": "2.0.0", "Path": "models/wine/2"}
        reply = update(deployment, ["Bundle"], new_version)
        assert (outcome(reply), reply.json()) == ("UpdateConfigurationResponse", {})
        assert reply.flags == RESPONSE_FLAGS[config_server.kind]
        changed = [["Bundle", "Version"], ["Bundle", "Path"]]
        for stream in (on_bundle, on_everything):
            paths = events(inference, stream, MODEL, 2)
            if config_server.kind == BROKER:
                assert paths == changed  # in the order of the merge
            else:
                assert sorted(paths) == sorted(changed)
            assert quiet(inference, stream)
        assert quiet(inference, on_queue)
        assert value(inference, MODEL, ["Bundle"]) == new_version


def test_a_component_watches_its_own_limits(config_server: IpcServer) -> None:
    with config_server.raw(TALKER) as talker:
        everything, queue = watch(talker, []), watch(talker, ["QueueSize"])
        assert outcome(update(talker, [], {"QueueSize": 32})) == "UpdateConfigurationResponse"
        for stream in (everything, queue):
            assert events(talker, stream, TALKER, 1) == [["QueueSize"]]
            assert quiet(talker, stream)
        reply = get(talker, {"keyPath": ["QueueSize"]})
    # The Java Nucleus reads valueToMerge as a Map<String, Object>: Gson makes 32 a double.
    expected = {BROKER: b'{"QueueSize":32.0}', LITE: b'{"QueueSize":32}'}[config_server.kind]
    assert reply.message.payload == b'{"componentName":"%s","value":%s}' % (
        TALKER.encode(),
        expected,
    )


def test_a_new_key_is_reported_twice_by_the_broker(config_server: IpcServer) -> None:
    """Topics.createLeafChild notifies that the leaf is there, then withNewerValue that it has
    its value: the Java Nucleus sends two events for one new key. Nucleus lite sends one."""
    with config_server.raw(TALKER) as talker:
        stream = watch(talker, [])
        update(talker, [], {"Batch": 8})
        count = {BROKER: 2, LITE: 1}[config_server.kind]
        assert events(talker, stream, TALKER, count) == [["Batch"]] * count
        assert quiet(talker, stream)


def test_the_same_value_again_is_not_reported(config_server: IpcServer) -> None:
    """Only the timestamp moves (timestampUpdated, which the Nucleus does not send)."""
    with config_server.raw(TALKER) as talker:
        stream = watch(talker, ["Limits"])
        update(talker, ["Limits"], {"MaxRows": 500})
        assert events(talker, stream, TALKER, 1) == [["Limits", "MaxRows"]]
        update(talker, ["Limits"], {"MaxRows": 500}, time.time() + 1)
        assert quiet(talker, stream)


# --- what an update may do --------------------------------------------------------------------
STALE = {
    BROKER: (
        "FailedUpdateConditionCheckError",
        "Proposed timestamp is older than the config's latest modified timestamp",
    ),
    LITE: ("UpdateConfigurationResponse", None),  # ignored without a word
}


def test_an_older_timestamp_changes_nothing(config_server: IpcServer) -> None:
    """UpdateConfigurationOperationHandler merges, then fails the request if the node's time is
    newer than the request's; nucleus lite keeps the newer value and answers as if it had
    changed it."""
    now = time.time()
    with config_server.raw(TALKER) as talker:
        stream = watch(talker, ["QueueSize"])
        update(talker, [], {"QueueSize": 16}, now)
        assert events(talker, stream, TALKER, 1) == [["QueueSize"]]
        reply = update(talker, [], {"QueueSize": 8}, now - 10)
        error, message = STALE[config_server.kind]
        assert outcome(reply) == error
        assert reply.json().get("message") == message
        assert value(talker, TALKER, ["QueueSize"]) == {"QueueSize": 16}
        assert quiet(talker, stream)


ACCESS_CONTROL_REFUSED = {
    BROKER: "Config update is not allowed for following fields [accessControl]",
    LITE: "Config update is not allowed for following field [accessControl]",
}


def test_a_component_updates_only_its_own_configuration(config_server: IpcServer) -> None:
    """UpdateConfigurationRequest has no componentName: one in the request is ignored, and the
    caller's own configuration changes. Its accessControl is not for IPC to change."""
    with config_server.raw(MODEL) as model:
        reply = update(model, [], {"Mine": "yes"}, componentName=TALKER)
        assert outcome(reply) == "UpdateConfigurationResponse"
        assert value(model, MODEL, ["Mine"]) == {"Mine": "yes"}
        assert outcome(get(model, {"componentName": TALKER, "keyPath": ["Mine"]})) == (
            "ResourceNotFoundError"
        )
        for key_path, change in (([], {"accessControl": {}}), (["accessControl"], {"x": 1})):
            reply = update(model, key_path, change)
            assert outcome(reply) == "InvalidArgumentsError"
            assert reply.json()["_message"] == ACCESS_CONTROL_REFUSED[config_server.kind]


def test_a_leaf_and_a_container_trade_places(config_server: IpcServer) -> None:
    """The Java Nucleus's merge replaces a leaf by a container, or a container by a leaf, when
    the new value is of the other kind (Topics.updateChild); nucleus lite refuses both."""
    with config_server.raw(TALKER) as talker:
        for change, read in (({"QueueSize": {"Max": 5}}, "QueueSize"), ({"Limits": 3}, "Limits")):
            reply = update(talker, [], change)
            if config_server.kind == LITE:
                assert outcome(reply) == "ServiceError"
                assert reply.json()["_message"] == "Failed to update the configuration."
                continue
            assert outcome(reply) == "UpdateConfigurationResponse"
            got = value(talker, TALKER, [read])
            assert got == ({"Max": 5.0} if read == "QueueSize" else {"Limits": 3.0})


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        # Gson reads the timestamp with getAsDouble, so an integer is a time too; nucleus lite
        # wants a floating-point number (the awsiotsdk client always sends one).
        (
            {"keyPath": [], "timestamp": 1_900_000_000, "valueToMerge": {"A": 1}},
            {BROKER: "UpdateConfigurationResponse", LITE: "InvalidArgumentsError"},
        ),
        (
            {"keyPath": [], "valueToMerge": {"A": 1}},
            {BROKER: "InvalidArgumentsError", LITE: "InvalidArgumentsError"},
        ),
        (
            {"keyPath": [], "timestamp": 1_900_000_000.5},
            {BROKER: "InvalidArgumentsError", LITE: "InvalidArgumentsError"},
        ),
    ],
    ids=["integer-timestamp", "no-timestamp", "no-value"],
)
def test_update_arguments(
    config_server: IpcServer, request_: dict[str, Any], expected: dict[str, str]
) -> None:
    with config_server.raw(TALKER) as talker:
        reply = talker.receive_on(talker.call(UPDATE, request_))
    assert outcome(reply) == expected[config_server.kind]


# --- UpdateState ------------------------------------------------------------------------------
def test_update_state(config_server: IpcServer) -> None:
    """The Java Nucleus records RUNNING and ERRORED as the caller's state, and fails anything
    else (ReportedLifecycleState has only those two). Nucleus lite hands the state to gghealthd,
    which reports it to systemd; the tests run neither, so every UpdateState is a ServiceError
    there."""
    with config_server.raw(TALKER) as talker:
        for state in ("RUNNING", "ERRORED", "running", None):
            reply = talker.receive_on(talker.call(STATE, {"state": state}))
            if config_server.kind == LITE:
                assert outcome(reply) == "ServiceError"
                continue
            broker = config_server.broker
            assert broker is not None
            if state in ("RUNNING", "ERRORED"):
                assert (outcome(reply), reply.json()) == ("UpdateStateResponse", {})
                assert broker.component_state(TALKER) == state
            else:
                assert outcome(reply) == "ServiceError"
                assert broker.component_state(TALKER) == "ERRORED"  # unchanged
        if config_server.broker is not None:
            assert config_server.broker.component_state(MODEL) is None  # it reported nothing


# --- the awsiotsdk client ---------------------------------------------------------------------
def test_the_awsiotsdk_client(config_server: IpcServer) -> None:
    """What the inference component will do, with the client it uses."""
    need(ipc is not None, "awsiotsdk (pip install awsiotsdk)")
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import ResourceNotFoundError, ServiceError

    def client(component: str) -> Any:
        connection = ipc.connect(
            ipc_socket=config_server.socket_path, authtoken=config_server.token(component)
        )
        return GreengrassCoreIPCClientV2(client=connection)

    inference, model = client(STRANGER), client(MODEL)
    heard: list[Any] = []
    arrived = threading.Event()

    def on_event(event: Any) -> None:
        heard.append(event.configuration_update_event)
        arrived.set()

    try:
        response = inference.get_configuration(component_name=MODEL, key_path=["Bundle"])
        assert response.component_name == MODEL
        assert response.value == {"Version": "1.0.0", "Path": "models/wine/1"}
        _, operation = inference.subscribe_to_configuration_update(
            component_name=MODEL, key_path=["Bundle"], on_stream_event=on_event
        )
        model.update_configuration(
            key_path=["Bundle"],
            timestamp=datetime.datetime.now(datetime.timezone.utc),
            value_to_merge={"Version": "2.0.0"},
        )
        assert arrived.wait(5)
        assert (heard[0].component_name, heard[0].key_path) == (MODEL, ["Bundle", "Version"])
        with pytest.raises(ResourceNotFoundError) as missing:
            inference.get_configuration(component_name=MODEL, key_path=["Nope"])
        assert missing.value.message == {BROKER: "Key not found", LITE: None}[config_server.kind]
        if config_server.kind == BROKER:
            inference.update_state(state="RUNNING")
        else:
            with pytest.raises(ServiceError):
                inference.update_state(state="RUNNING")
        operation.close()
    finally:
        inference.close()
        model.close()
    if config_server.broker is not None:
        assert config_server.broker.component_state(STRANGER) == "RUNNING"


# --- the broker alone -------------------------------------------------------------------------
COMPONENTS = {"tok-model": ComponentPolicy(MODEL), "tok-talker": ComponentPolicy(TALKER)}
DEFAULTS = {MODEL: {"Bundle": {"Version": "1.0.0"}, "QueueSize": 99}}


@pytest.fixture
def broker() -> Iterator[Broker]:
    with (
        tempfile.TemporaryDirectory(prefix="eb-") as folder,
        Broker(Path(folder) / "ipc.sock", COMPONENTS, configurations=DEFAULTS) as running,
    ):
        yield running


def test_a_watch_ends_with_its_stream(broker: Broker) -> None:
    with connected(broker, "tok-talker") as talker, connected(broker, "tok-model") as model:
        ended, kept = watch(talker, [], MODEL), watch(talker, [], MODEL)
        talker.send(frame_bytes(MessageType.APPLICATION_MESSAGE, ended, flags=2))  # TERMINATE
        update(model, [], {"QueueSize": 1})
        assert events(talker, kept, MODEL, 1) == [["QueueSize"]]
        assert quiet(talker, ended)
    with connected(broker, "tok-model") as model:  # the watcher's connection is gone
        assert outcome(update(model, [], {"QueueSize": 2})) == "UpdateConfigurationResponse"


def test_a_watch_follows_its_key_when_a_leaf_becomes_a_container(broker: Broker) -> None:
    """Topics.updateChild hands the replaced node's watchers to its replacement."""
    with connected(broker, "tok-model") as model:
        stream = watch(model, ["QueueSize"])
        update(model, [], {"QueueSize": {"Max": 1}})
        # The leaf is removed (reported), then Max is created and given its value.
        assert events(model, stream, MODEL, 3) == [["QueueSize"], *[["QueueSize", "Max"]] * 2]
        update(model, ["QueueSize"], {"Max": 2})
        assert events(model, stream, MODEL, 1) == [["QueueSize", "Max"]]


def test_a_stale_update_still_changes_what_is_older_and_says_so(broker: Broker) -> None:
    """The Nucleus checks the timestamp after merging: a key the request adds is added, and
    the request still fails because the configuration holds something newer."""
    with connected(broker, "tok-model") as model:
        stream = watch(model, [])
        future = time.time() + 3600
        update(model, [], {"QueueSize": 5}, future)
        events(model, stream, MODEL, 1)
        reply = update(model, [], {"QueueSize": 6, "Extra": 1}, future - 1)
        assert outcome(reply) == "FailedUpdateConditionCheckError"
        assert events(model, stream, MODEL, 2) == [["Extra"], ["Extra"]]
        assert value(model, MODEL, []) == {
            "Bundle": {"Version": "1.0.0"},
            "Extra": 1.0,
            "QueueSize": 5.0,
        }


def test_a_new_key_path_is_created_whatever_the_timestamp(broker: Broker) -> None:
    """lookupTopics creates the missing containers stamped now, and the merge takes that time:
    the request's timestamp is not looked at."""
    with connected(broker, "tok-model") as model:
        reply = update(model, ["Fresh", "Deep"], {"a": 1}, 1.0)
        assert outcome(reply) == "UpdateConfigurationResponse"
        assert value(model, MODEL, ["Fresh"]) == {"Deep": {"a": 1.0}}
        reply = update(model, ["QueueSize", "x"], {"a": 1})  # through a leaf
        assert outcome(reply) == "ServiceError"
        assert reply.json()["message"] == (
            f"QueueSize in services.{MODEL}.configuration is already a leaf, "
            "cannot become a container"
        )


@pytest.mark.parametrize(
    "request_",
    [
        {"keyPath": "Bundle", "timestamp": 1.0, "valueToMerge": {}},
        {"keyPath": [1], "timestamp": 1.0, "valueToMerge": {}},
        {"keyPath": [], "timestamp": "now", "valueToMerge": {}},
        {"keyPath": [], "timestamp": 1e400, "valueToMerge": {}},
        {"keyPath": [], "timestamp": 1.0, "valueToMerge": [1]},
        {"keyPath": [], "timestamp": 1.0, "valueToMerge": {"a": 1e400}},
        {"keyPath": ["k"] * (MAX_DEPTH + 1), "timestamp": 1.0, "valueToMerge": {}},
    ],
    ids=["path-string", "path-number", "time-string", "time-inf", "list", "inf", "deep"],
)
def test_requests_that_cannot_be_deserialized(broker: Broker, request_: dict[str, Any]) -> None:
    payload = json.dumps(request_).replace("Infinity", "1e400").encode()
    with connected(broker, "tok-model") as model:
        reply = model.receive_on(model.call(UPDATE, payload))
        assert outcome(reply) == "InternalServerError"
        assert outcome(get(model, {"keyPath": ["QueueSize"]})) == "GetConfigurationResponse"


def test_broker_configuration_and_state_api(broker: Broker) -> None:
    snapshot = broker.configuration(MODEL)
    assert snapshot == {"Bundle": {"Version": "1.0.0"}, "QueueSize": 99}
    snapshot["Bundle"]["Version"] = "changed"  # a copy
    assert broker.configuration(MODEL.upper())["Bundle"] == {"Version": "1.0.0"}
    assert broker.configuration(TALKER) == {}  # declared without one
    with pytest.raises(KeyError):
        broker.configuration("com.example.Nobody")
    with pytest.raises(KeyError):
        broker.component_state("com.example.Nobody")
    with pytest.raises(TimeoutError, match="did not report RUNNING"):
        broker.wait_for_component_state(TALKER, "RUNNING", timeout=0.1)
    with connected(broker, "tok-talker") as talker:
        talker.receive_on(talker.call(STATE, {"state": "RUNNING"}))
        broker.wait_for_component_state(TALKER, "RUNNING", timeout=5)
        update(talker, [], {"Seen": True})
    broker.stop()
    broker.start()
    # The configuration lasts (the Nucleus keeps it on disk); reported states do not.
    assert broker.configuration(TALKER) == {"Seen": True}
    assert broker.component_state(TALKER) is None


def test_broker_arguments(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with pytest.raises(ValueError, match="undeclared components"):
        Broker(path, COMPONENTS, configurations={"com.example.Nobody": {}})
    clash = {"a": ComponentPolicy("com.example.A"), "b": ComponentPolicy("com.example.a")}
    with pytest.raises(ValueError, match="differ only in case"):
        Broker(path, clash)
    with pytest.raises(ValueError, match="which JSON cannot carry"):
        Broker(path, COMPONENTS, configurations={MODEL: {"x": float("nan")}})


# --- the store, without sockets ---------------------------------------------------------------
def test_keys_fold_and_sort_as_in_java() -> None:
    assert fold("QueueSize") == "queuesize"
    assert fold("Straße") == "straße"  # "ß".upper() is "SS": Java keeps the character
    store = ConfigStore({"C": {"b": 1, "A": 2, "_hidden": 3, "c": {"_x": 1, "y": 2}}})
    assert list(store.read("C", ()) or {}) == ["A", "b", "c"]
    assert store.read("C", ["c"]) == {"y": 2}
    assert store.read("C", ["_hidden"]) == {"_hidden": 3}  # a leaf asked for by name
    assert store.read("c", ["B"]) == {"b": 1}


def test_a_value_of_another_type_is_a_change() -> None:
    """Objects.equals: Integer 5 and Double 5.0 differ, and so do 1 and true."""
    store = ConfigStore({"C": {"n": 5, "flag": 1}}, loaded_at=0)
    notes, stale = store.merge("C", (), {"n": 5}, 10)
    assert (notes, stale) == ([], False)  # same value: only the timestamp moved
    store.merge("C", (), {"n": 5.0, "flag": True}, 20)
    assert store.read("C", ()) == {"flag": True, "n": 5.0}
    assert isinstance((store.read("C", ["n"]) or {})["n"], float)


def test_epoch_milliseconds_as_java_makes_them() -> None:
    assert _epoch_millis(1.0) == 1000
    assert _epoch_millis(1_700_000_000) == 1_700_000_000_000
    assert _epoch_millis(1.0009) == 1000  # truncated, not rounded
    assert _epoch_millis(-0.5) == -500
    for bad in ("1", True, None):
        with pytest.raises(MalformedRequest):
            _epoch_millis(bad)


def test_json_documents() -> None:
    assert json_document({"a": [1, {"b": 2}]}, doubles=True) == {"a": [1.0, {"b": 2.0}]}
    deep: Any = {}
    for _ in range(MAX_DEPTH):
        deep = {"k": deep}
    with pytest.raises(ValueError, match="nested more than"):
        json_document(deep)
    for bad, reason in (({1: "a"}, "keys are strings"), ({"a": {1, 2}}, "set")):
        with pytest.raises(ValueError, match=reason):
            json_document(bad)

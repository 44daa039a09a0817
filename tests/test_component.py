"""The component's life: a new model component version swapped in between requests (or refused,
the old model serving on), live limits, topics with the thing name, and how the server answers a
deployment's PreComponentUpdateEvent (UpdateDeferral)."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeboost.runtime import Model
from edgeboost.runtime.component import (
    ComponentLife,
    ModelComponent,
    UpdateDeferral,
    substitute_thing_name,
)
from edgeboost.runtime.exceptions import BundleError, IpcError, IpcRefusedError
from edgeboost.runtime.integrity import CHECKSUMS_NAME
from edgeboost.runtime.targets import host_target
from edgeboost.runtime.transport import Message

from .conftest import NAMES
from .test_server import REQUEST, ROW, MemoryTransport, make_server

MODEL = "com.example.Sensors.Model"


def deploy(bundle: Path, root: Path, version: str) -> dict[str, Any]:
    """Unpack ``bundle`` as the Nucleus would a model component version; its Bundle config."""
    folder = "bundle-" + hashlib.sha256((bundle / CHECKSUMS_NAME).read_bytes()).hexdigest()[:16]
    shutil.copytree(bundle, root / MODEL / version / folder)
    return {
        "ModelName": "sensors",
        "ModelSha256": Model.load(bundle).sha256,
        "Version": version,
        "Folders": {host_target(): folder},
    }


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory: pytest.TempPathFactory, compile_once: Any) -> Path:
    """A second model with the same features and different predictions."""
    import xgboost as xgb

    rng = np.random.default_rng(11)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    booster = xgb.train(
        {"max_depth": 3, "seed": 1, "nthread": 1},
        xgb.DMatrix(x, label=x[:, 1] * 3, feature_names=NAMES),
        10,
    )
    path = tmp_path_factory.mktemp("other") / "sensors-b.json"
    booster.save_model(path)
    return compile_once(path, "sensors-b")


class ConfigTransport(MemoryTransport):
    """MemoryTransport plus the configuration calls ComponentLife makes."""

    def __init__(self, configurations: dict[str | None, dict[str, Any]]) -> None:
        super().__init__()
        self.configurations = configurations
        self.watchers: dict[str | None, Any] = {}
        self.states: list[str] = []
        self.on_update: Any = None  # the component updates callback
        self.refuse_updates: IpcRefusedError | None = None
        self.deferrals: list[tuple[str, int, str | None]] = []

    def get_configuration(self, key_path: list[str], *, component: str | None = None) -> Future:
        value = self.configurations[component]
        for key in key_path:  # as the Nucleus answers: a container's contents, a leaf by name
            value = value[key] if isinstance(value[key], dict) else {key: value[key]}
        return _done({"componentName": component or "self", "value": value})

    def subscribe_to_configuration_update(
        self, key_path: list[str], on_update: Any, *, component: str | None = None
    ) -> Future:
        self.watchers[component] = on_update
        return _done({})

    def update_state(self, state: str) -> Future:
        self.states.append(state)
        return _done({})

    def subscribe_to_component_updates(self, on_event: Any) -> Future:
        if self.refuse_updates is not None:
            refused: Future = Future()
            refused.set_exception(self.refuse_updates)
            return refused
        self.on_update = on_event
        return _done({})

    def defer_component_update(
        self, deployment_id: str, recheck_after_ms: int, message: str | None = None
    ) -> Future:
        self.deferrals.append((deployment_id, recheck_after_ms, message))
        return _done({})

    def change(self, component: str | None, **values: Any) -> None:
        self.configurations[component].update(values)
        self.watchers[component]({"componentName": component, "keyPath": list(values)})


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def serve(
    model: Model, transport: ConfigTransport, component: ModelComponent, **options: Any
) -> tuple[Any, threading.Event, threading.Thread]:
    server, _ = make_server(model)
    server.transport = server.outbox._transport = transport
    life = ComponentLife(server, transport, component, **options)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop, life.start), daemon=True)
    thread.start()
    return server, stop, thread


def wait(condition: Any, timeout: float = 5.0) -> None:
    event = threading.Event()
    deadline = threading.Timer(timeout, event.set)
    deadline.start()
    while not condition():
        if event.wait(0.01):
            raise AssertionError("timed out")
    deadline.cancel()


def test_a_new_model_version_is_swapped_in_and_a_bad_one_refused(
    named_bundle: tuple[Path, object], other_bundle: Path, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts-unarchived"
    first = deploy(named_bundle[0], root, "1.0.0")
    second = deploy(other_bundle, root, "2.0.0")
    component = ModelComponent(MODEL, root / MODEL)
    transport = ConfigTransport({MODEL: {"Bundle": first}, None: {"QueueSize": 64}})
    server, stop, thread = serve(component.load(first), transport, component)
    try:
        wait(lambda: transport.states == ["RUNNING"])
        a = server.model.predict([ROW])
        transport.change(MODEL, Bundle=second)
        wait(lambda: server.model.sha256 == second["ModelSha256"])
        assert server.model.predict([ROW]) != a
        assert server.stats.counts["model_swaps"] == 1
        # A configuration naming a folder that fails verification: refused, B keeps serving.
        broken = dict(second, Version="3.0.0")
        shutil.copytree(other_bundle, root / MODEL / "3.0.0" / second["Folders"][host_target()])
        library = next((root / MODEL / "3.0.0").rglob("libmodel.so"))
        data = bytearray(library.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one byte changed: the hash check refuses it
        library.write_bytes(bytes(data))
        transport.change(MODEL, Bundle=broken)
        wait(lambda: server.stats.counts["model_refused"] == 1)
        assert server.model.sha256 == second["ModelSha256"]
        # The same version again (another key changed): nothing happens.
        transport.change(MODEL, Bundle=second)
        transport.change(MODEL, Bundle=second)
        assert server.stats.counts["model_swaps"] == 1
    finally:
        stop.set()
        thread.join(10)


def test_live_limits_and_queue_sizes(
    named_bundle: tuple[Path, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="edgeboost.runtime.component")
    root = tmp_path / "artifacts-unarchived"
    first = deploy(named_bundle[0], root, "1.0.0")
    component = ModelComponent(MODEL, root / MODEL)
    transport = ConfigTransport({MODEL: {"Bundle": first}, None: {"QueueSize": 64}})
    server, stop, thread = serve(component.load(first), transport, component)
    try:
        wait(lambda: transport.states == ["RUNNING"])
        transport.change(None, MaxRows=2, QueueSize=7, MaxPayloadBytes="x", MaxReplyBytes=-1)
        wait(lambda: server.config.limits.max_rows == 2)
        assert server.config.queue_size == 7 and server._inbox._work_size == 7
        # Values of the wrong type or out of range are ignored, not applied.
        assert server.config.limits.max_payload_bytes == 256 * 1024
        assert server.config.limits.max_reply_bytes == 12 * 1024 * 1024
        # How long a deployment may wait, as nucleus lite gives its defaults (a string).
        transport.change(None, MaxUpdateDeferSeconds="2.5")
        wait(lambda: "at most 2.5 s for requests in flight" in caplog.text)
        transport.change(None, MaxUpdateDeferSeconds=-1, QueueSize=8)  # the first ignored
        wait(lambda: server.config.queue_size == 8)
        assert caplog.text.count("settings: a deployment waits") == 1
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.parametrize(
    ("bundle", "problem"),
    [
        ({"Version": "1.0.0", "ModelSha256": "x", "Folders": {}}, "no Folders entry for"),
        ({"Version": "../1", "ModelSha256": "x", "Folders": {host_target(): "b"}}, "no valid"),
        ("not a mapping", "no Folders entry for"),
    ],
)
def test_a_malformed_bundle_configuration_is_a_bundle_error(
    bundle: Any, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match=problem):
        ModelComponent(MODEL, tmp_path / MODEL).locate(bundle)


def test_a_configuration_naming_another_model_is_refused(
    named_bundle: tuple[Path, object], tmp_path: Path
) -> None:
    root = tmp_path / "artifacts-unarchived"
    first = deploy(named_bundle[0], root, "1.0.0")
    with pytest.raises(BundleError, match="the component's configuration names"):
        ModelComponent(MODEL, root / MODEL).load(dict(first, ModelSha256="0" * 64))


def test_topics_take_the_thing_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_IOT_THING_NAME", "gateway-7")
    assert (
        substitute_thing_name("edgeboost/{iot:thingName}/request") == "edgeboost/gateway-7/request"
    )
    assert substitute_thing_name("plain/topic") == "plain/topic"
    monkeypatch.delenv("AWS_IOT_THING_NAME")
    with pytest.raises(IpcError, match="AWS_IOT_THING_NAME is not set"):
        substitute_thing_name("edgeboost/{iot:thingName}/request")


# --- deployments -------------------------------------------------------------------------------
def test_update_deferral_decisions() -> None:
    deferral = UpdateDeferral(max_defer_s=10, recheck_ms=1000)
    assert deferral.decide("a", 0, now=0.0) == (0, "deployment a may go on: nothing in flight")
    assert deferral.decide("b", 5, now=100.0) == (
        1000,
        "deferring deployment b by 1000 ms: 5 requests in flight (deferral 1, 0.0 s of at "
        "most 10 s)",
    )
    assert deferral.decide("b", 3, now=103.0)[0] == 1000
    assert deferral.decide("b", 0, now=106.0) == (
        0,
        "deployment b may go on: nothing in flight (after 2 deferrals, 6.0 s)",
    )
    # Busy for good: deferred up to the limit, the last recheck cut to what is left of it.
    assert deferral.decide("c", 2, now=200.0)[0] == 1000
    assert deferral.decide("c", 2, now=209.75)[0] == 250
    assert deferral.decide("c", 2, now=210.0) == (
        0,
        "deployment c may go on with 2 requests in flight (after 2 deferrals, 10.0 s, the "
        "limit is 10 s); a stop answers what it can",
    )
    # Its PostComponentUpdateEvent ends it: the same id again starts afresh.
    deferral.finished("c")
    assert deferral.decide("c", 2, now=300.0)[0] == 1000
    never = UpdateDeferral(max_defer_s=0)
    assert never.decide("d", 4, now=0.0) == (
        0,
        "deployment d may go on with 4 requests in flight (deferring is off, the limit is 0 s); "
        "a stop answers what it can",
    )


def test_a_deployment_waits_while_requests_are_in_flight(
    named_bundle: tuple[Path, object], tmp_path: Path
) -> None:
    root = tmp_path / "artifacts-unarchived"
    first = deploy(named_bundle[0], root, "1.0.0")
    component = ModelComponent(MODEL, root / MODEL)
    transport = ConfigTransport({MODEL: {"Bundle": first}, None: {}})
    server, stop, thread = serve(component.load(first), transport, component)
    try:
        wait(lambda: transport.states == ["RUNNING"])
        transport.gate.clear()  # replies wait: the requests stay in flight
        for i in range(3):
            server.deliver(
                Message(topic=REQUEST, payload=json.dumps({"id": i, "instances": [ROW]}).encode())
            )
        wait(lambda: server.stats.open_requests() == 3)
        pre = {"deploymentId": "d-1", "isGgcRestarting": False}
        transport.on_update("preUpdateEvent", pre)
        wait(lambda: len(transport.deferrals) == 1)
        assert transport.deferrals[0] == ("d-1", 1000, "edgeboost: 3 requests in flight")
        transport.gate.set()
        wait(lambda: server.stats.open_requests() == 0)
        transport.on_update("preUpdateEvent", pre)
        wait(lambda: len(transport.deferrals) == 2)
        assert transport.deferrals[1] == ("d-1", 0, None)
        transport.on_update("postUpdateEvent", {"deploymentId": "d-1"})
        transport.on_update("preUpdateEvent", {"isGgcRestarting": False})  # no id: no answer
    finally:
        stop.set()
        thread.join(10)
    assert len(transport.deferrals) == 2 and len(transport.published) == 3


def test_an_ipc_server_without_component_updates_is_served_all_the_same(
    named_bundle: tuple[Path, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "artifacts-unarchived"
    first = deploy(named_bundle[0], root, "1.0.0")
    component = ModelComponent(MODEL, root / MODEL)
    transport = ConfigTransport({MODEL: {"Bundle": first}, None: {}})
    transport.refuse_updates = IpcRefusedError(
        "ServiceError", "SubscribeToComponentUpdates", "no message"
    )
    caplog.set_level("INFO", logger="edgeboost.runtime.component")
    _, stop, thread = serve(component.load(first), transport, component)
    try:
        wait(lambda: transport.states == ["RUNNING"])
    finally:
        stop.set()
        thread.join(10)
    (line,) = [r.getMessage() for r in caplog.records if "component updates" in r.getMessage()]
    assert line == (
        "component updates: not served by this IPC server (ServiceError); a deployment will not "
        "wait for requests in flight"
    )


def test_reporting_errored_is_bounded_when_the_ipc_server_hangs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The IPC server accepts the connection and never answers: the exit waits half a
    second, not the 5 s of an ordinary call."""
    import socket
    import tempfile
    import time

    from edgeboost.runtime.component import report_errored

    caplog.set_level("INFO", logger="edgeboost.runtime.component")
    with tempfile.TemporaryDirectory(prefix="eb-") as folder:
        path = f"{folder}/hung.sock"
        with socket.socket(socket.AF_UNIX) as hung:
            hung.bind(path)
            hung.listen()  # connections wait in the backlog: CONNECT is never answered
            monkeypatch.setenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", path)
            monkeypatch.setenv("SVCUID", "t")
            started = time.monotonic()
            report_errored(BundleError("the model failed"))
            took = time.monotonic() - started
    assert 0.4 < took < 1.0, took
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("could not report ERRORED to the IPC server (no CONNECT_ACK")

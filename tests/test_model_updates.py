"""A new model, deployed as a new version of the model component while a consumer sends
requests, through the local broker and nucleus lite: the server swaps it in without a restart,
every reply names the model that computed it, the replies switch from A to B exactly once, and
none is lost."""

from __future__ import annotations

import json
import re
import signal
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgeboost.recipes import ComponentOptions, package_bundle
from edgeboost.runtime import Model
from edgeboost.runtime.ipc_transport import BuiltinTransport
from edgeboost.runtime.targets import host_target

from .conftest import NAMES, need
from .serving_harness import (
    REQUEST,
    RESPONSE,
    BrokerProcess,
    Consumer,
    LiteProcess,
    ServerProcess,
    request,
    wait_until,
    write_recipe,
)

NAME = "com.example.Sensors"
MODEL = f"{NAME}.Model"
SERVER, CONSUMER, DEPLOYER = "tok-server", "tok-consumer", "tok-model"
ROW = dict(zip(NAMES, [0.5, -1.0, 2.0, 0.25], strict=True))
MOVED = "edgeboost/inference/moved"  # a second request topic the server's recipe grants


@pytest.fixture(scope="module")
def model_b(tmp_path_factory: pytest.TempPathFactory, compile_once: Any) -> Path:
    """Another model of the same features, with other predictions."""
    import xgboost as xgb

    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    dtrain = xgb.DMatrix(x, label=x[:, 2] * -2, feature_names=NAMES)
    booster = xgb.train({"max_depth": 3, "seed": 0, "nthread": 1}, dtrain, 12)
    path = tmp_path_factory.mktemp("model-b") / "sensors-b.json"
    booster.save_model(path)
    return compile_once(path, "sensors-b")


class Device:
    """The Nucleus's folders on one machine: each model component version unpacked under
    <root>/packages/artifacts-unarchived/NAME.Model/<version>/, recipes for the IPC server."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models = root / "packages" / "artifacts-unarchived" / MODEL

    def package(self, bundle: Path, version: str, out: Path) -> dict[str, Any]:
        """Package ``bundle`` as model component ``version``, unpack this platform's zip as
        the Nucleus would, and return the version's Bundle configuration."""
        options = ComponentOptions(name=NAME, version="1.0.0", model_version=version)
        package = package_bundle(bundle, out, options, only="model")
        assert package.model is not None
        zip_path = package.model.zips[host_target()]
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(self.models / version / zip_path.stem)
        recipe = yaml.safe_load(package.model.recipe.read_text())
        self.model_recipe = package.model.recipe
        return dict(recipe["ComponentConfiguration"]["DefaultConfiguration"]["Bundle"])


@pytest.fixture(params=["broker", "greengrass-lite"])
def deployed(
    request: pytest.FixtureRequest,
    named_bundle: tuple[Path, object],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Device, Any, dict[str, Any]]]:
    """Model A deployed as version 1.0.0, and an IPC server that knows the three components."""
    need(Consumer is not None, "awsiotsdk")
    work = tmp_path_factory.mktemp("m", numbered=True)
    device = Device(work / "gg")
    first = device.package(named_bundle[0], "1.0.0", work / "a")
    recipes = {
        SERVER: write_recipe(
            work / "server.json",
            NAME,
            publish=[RESPONSE],
            subscribe=[REQUEST, MOVED],
        ),
        CONSUMER: write_recipe(
            work / "consumer.json",
            f"{NAME}.Consumer",
            publish=[REQUEST, MOVED, "not/granted"],
            subscribe=[RESPONSE],
        ),
        DEPLOYER: _json_recipe(device.model_recipe, work / "model.json"),
    }
    if request.param == "broker":
        server: Any = BrokerProcess(work / "ipc.sock", recipes)
    else:
        server = LiteProcess(request.getfixturevalue("lite_build"), work / "lite", recipes)
    server.start()
    yield device, server, first
    server.close()


def _json_recipe(yaml_recipe: Path, out: Path) -> Path:
    out.write_text(json.dumps(yaml.safe_load(yaml_recipe.read_text())))
    return out


def update_configuration(server: Any, role: str, change: dict[str, Any]) -> None:
    """Merge ``change`` into the configuration of the component ``role`` stands for, from a
    connection of its own: what a deployment does to it (a new model component version gets
    its new defaults; a configuration merge changes the server's own values)."""
    env = server.env(role)
    nucleus = BuiltinTransport(
        socket_path=env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
        auth_token=env["SVCUID"],
    )
    nucleus.start([], lambda message: None, lambda error: None)
    try:
        update = {"keyPath": [], "timestamp": time.time(), "valueToMerge": change}
        nucleus._call("UpdateConfiguration", update).result(5)
    finally:
        nucleus.close(1)


def start_server(device: Device, ipc_server: Any, logs: Path, *args: str) -> ServerProcess:
    """`edgeboost serve` as the inference component's Run starts it: following the model
    component (the test recipes grant no legacy topics)."""
    server = ServerProcess(Path("unused"), ipc_server.env(SERVER), logs, *args)
    server.command[4:5] = ["--model-component", MODEL, "--model-path", str(device.models)]
    server.command += ["--legacy-request-topic", ""]
    return server.start()


def wait_following(server: ServerProcess) -> None:
    """Until the server serves and watches its configurations: a change made between its
    "serving" line and its watches would go unheard (its last subscription, to component
    updates, logs one line either way)."""
    server.wait_serving()
    wait_until(lambda: "component updates: " in server.stdout, 10, lambda: server.stdout)


class Following:
    """A server following the model component, a consumer of its replies, and the server's
    exit status once the ``following`` block is left (SIGTERM)."""

    def __init__(self, server: ServerProcess, consumer: Consumer) -> None:
        self.server, self.consumer = server, consumer
        self.status: int | None = None


@contextmanager
def following(device: Device, ipc_server: Any, logs: Path, *args: str) -> Iterator[Following]:
    server = start_server(device, ipc_server, logs, *args)
    run = Following(server, Consumer(ipc_server.env(CONSUMER)).subscribe(RESPONSE))
    try:
        wait_following(server)
        yield run
    finally:
        run.consumer.close()
        run.status, _ = server.stop()


def test_a_new_model_version_is_served_without_a_restart(
    deployed: tuple[Device, Any, dict[str, Any]],
    model_b: Path,
    named_bundle: tuple[Path, object],
    tmp_path: Path,
) -> None:
    device, ipc_server, _ = deployed
    with following(device, ipc_server, tmp_path, "--stats-interval", "3600") as run:
        server, consumer = run.server, run.consumer
        pid = server.pid
        sent = 0

        def send(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                consumer.publish(REQUEST, request(sent, [ROW]))
                sent += 1

        send(40)
        second = device.package(model_b, "2.0.0", tmp_path / "b")
        update_configuration(ipc_server, DEPLOYER, {"Bundle": second})
        wait_until(lambda: "now serving" in server.stdout, 5, lambda: server.stderr)
        send(40)
        replies = consumer.wait_for(sent, timeout=10)
        assert server.pid == pid and server.process is not None and server.process.poll() is None
    status = run.status
    a, b = Model.load(named_bundle[0]), Model.load(model_b)
    by_id = sorted(replies, key=lambda reply: reply["id"])
    assert [r["id"] for r in by_id] == list(range(sent)), "a request was lost or answered twice"
    shas = [r["model"]["sha256"] for r in by_id]
    assert set(shas) == {a.sha256, b.sha256}
    switch = shas.index(b.sha256)
    assert shas == [a.sha256] * switch + [b.sha256] * (sent - switch)  # exactly once
    assert 40 <= switch <= 80
    # Each reply is what the model it names predicts.
    assert all(
        r["predictions"] == (a if r["model"]["sha256"] == a.sha256 else b).predict([ROW])
        for r in by_id
    )
    stats = server.last_stats()
    assert stats["model_swaps"] == 1 and stats["model_refused"] == 0
    assert status == 0, server.stderr


def test_a_new_version_that_fails_verification_is_refused(
    deployed: tuple[Device, Any, dict[str, Any]], model_b: Path, tmp_path: Path
) -> None:
    device, ipc_server, first = deployed
    with following(device, ipc_server, tmp_path) as run:
        server, consumer = run.server, run.consumer
        second = device.package(model_b, "2.0.0", tmp_path / "b")
        library = next((device.models / "2.0.0").rglob("libmodel.so"))
        data = bytearray(library.read_bytes())
        data[len(data) // 2] ^= 0xFF
        library.write_bytes(bytes(data))
        update_configuration(ipc_server, DEPLOYER, {"Bundle": second})
        wait_until(lambda: "refused the new model" in server.stderr, 5, lambda: server.stderr)
        consumer.publish(REQUEST, request("after", [ROW]))
        (reply,) = consumer.wait_for(1, timeout=5)
    status = run.status
    assert reply["model"]["sha256"] == first["ModelSha256"]  # the old model serves on
    assert "sha256 is" in server.stderr  # the reason, with both hashes
    assert server.last_stats()["model_refused"] == 1 and status == 0


def test_a_topic_change_moves_the_subscription_unless_refused(
    deployed: tuple[Device, Any, dict[str, Any]], tmp_path: Path
) -> None:
    device, ipc_server, _ = deployed
    with following(device, ipc_server, tmp_path) as run:
        server, consumer = run.server, run.consumer
        update_configuration(ipc_server, SERVER, {"RequestTopic": MOVED})
        wait_until(lambda: f"subscribed to {MOVED}" in server.stdout, 5, lambda: server.stdout)
        consumer.publish(REQUEST, request("old topic", [ROW]))
        consumer.publish(MOVED, request("new topic", [ROW]))
        (moved,) = consumer.wait_for(1, timeout=5)
        # A topic the recipe does not grant: refused, and the subscription stays where it was.
        update_configuration(ipc_server, SERVER, {"RequestTopic": "not/granted"})
        wait_until(lambda: "kept the subscriptions" in server.stderr, 5, lambda: server.stderr)
        consumer.publish(MOVED, request("still", [ROW]))
        replies = consumer.wait_for(2, timeout=5)
    status = run.status
    assert moved["id"] == "new topic" and "predictions" in moved
    assert [r["id"] for r in replies] == ["new topic", "still"]  # never the old topic's
    assert "not/granted" in server.stderr and status == 0


def test_limits_apply_live_and_the_state_reaches_the_ipc_server(
    deployed: tuple[Device, Any, dict[str, Any]], tmp_path: Path
) -> None:
    device, ipc_server, _ = deployed
    with following(device, ipc_server, tmp_path) as run:
        server, consumer = run.server, run.consumer
        if ipc_server.kind == "broker":  # nucleus lite refuses UpdateState for services it
            # did not start itself (its gghealthd keeps states through systemd)
            log = ipc_server.log_path
            wait_until(lambda: f"component {NAME} reported state RUNNING" in log.read_text(), 5)
        consumer.publish(REQUEST, request("before", [ROW] * 3))
        update_configuration(ipc_server, SERVER, {"MaxRows": 2, "QueueSize": 8})
        wait_until(lambda: "max rows 2," in server.stdout, 5, lambda: server.stdout)
        consumer.publish(REQUEST, request("after", [ROW] * 3))
        before, after = consumer.wait_for(2, timeout=5)
    status = run.status
    assert before["id"] == "before" and len(before["predictions"]) == 3
    assert after["id"] == "after" and after["error"]["code"] == "too_large"
    assert "queue 8," in server.stdout and status == 0


def test_component_updates_where_the_ipc_server_serves_them(
    deployed: tuple[Device, Any, dict[str, Any]], tmp_path: Path
) -> None:
    """The Java Nucleus (the broker) tells the server of each deployment, and an idle server
    lets it go on at once; nucleus lite does not serve SubscribeToComponentUpdates: one line
    says so, and the server serves on."""
    device, ipc_server, _ = deployed
    with following(device, ipc_server, tmp_path) as run:
        server, consumer = run.server, run.consumer
        if ipc_server.kind == "broker":
            log = ipc_server.log_path
            wait_until(lambda: f"component {NAME} reported state RUNNING" in log.read_text(), 5)
            ipc_server.signal(signal.SIGUSR1)  # the broker plays a deployment's part
            wait_until(lambda: "applying after" in log.read_text(), 10, log.read_text)
            assert f"{NAME} lets it go on" in log.read_text()
            wait_until(lambda: "is over (PostComponentUpdateEvent)" in server.stdout, 5)
            assert "may go on: nothing in flight" in server.stdout
        else:
            line = (
                "INFO edgeboost.runtime.component: component updates: not served by this IPC "
                "server (ServiceError); a deployment will not wait for requests in flight"
            )
            wait_until(lambda: line in server.stdout, 5, lambda: server.stdout)
        consumer.publish(REQUEST, request("served", [ROW]))
        (reply,) = consumer.wait_for(1, timeout=5)
    status = run.status
    assert reply["id"] == "served" and "predictions" in reply
    assert status == 0, server.stderr


@pytest.mark.parametrize("fault", ["topic not granted", "model fails to load"])
def test_a_fatal_exit_reports_errored_first(
    deployed: tuple[Device, Any, dict[str, Any]], fault: str, tmp_path: Path
) -> None:
    """Before exiting on a fatal error, the server reports ERRORED (UpdateState) where the IPC
    server takes it, within half a second; nucleus lite refuses it (ServiceError: its
    gghealthd is not run here), and the exit goes on."""
    device, ipc_server, _ = deployed
    if fault == "topic not granted":
        server = start_server(device, ipc_server, tmp_path, "--request-topic", "not/granted")
        expected_status = 2
    else:
        library = next((device.models / "1.0.0").rglob("libmodel.so"))
        data = bytearray(library.read_bytes())
        data[len(data) // 2] ^= 0xFF
        library.write_bytes(bytes(data))
        server = start_server(device, ipc_server, tmp_path)
        expected_status = 1
    status = server.wait(15)
    assert status == expected_status, (status, server.stderr)
    if fault == "topic not granted":
        assert "refused with UnauthorizedError" in server.stderr
    else:
        assert "edgeboost serve: error:" in server.stderr and "sha256 is" in server.stderr
    if ipc_server.kind == "broker":
        reported = re.search(r"reported ERRORED to the IPC server in (\d+) ms", server.stdout)
        assert reported is not None, server.stdout
        assert int(reported.group(1)) < 500
        log = ipc_server.log_path
        wait_until(lambda: f"component {NAME} reported state ERRORED" in log.read_text(), 5)
    else:
        assert "could not report ERRORED to the IPC server (UpdateState refused with " in (
            server.stdout
        )

"""Serving over Greengrass IPC with the real awsiotsdk client, through the local broker.

The broker enforces the access control of the recipes `edgeboost package` generates, so these
tests also prove the recipes grant what the components need (and nothing a stranger can use).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeboost.broker import Broker, ComponentPolicy, load_recipe_policy
from edgeboost.recipes import ComponentOptions, package_bundle
from edgeboost.runtime import Model
from edgeboost.runtime.protocol import Limits
from edgeboost.runtime.server import InferenceServer, ServerConfig

from .conftest import NAMES, need
from .ipc_client import Client, ipc
from .test_server import MALFORMED

REQUEST, RESPONSE = "edgeboost/inference/request", "edgeboost/inference/response"
LEGACY_IN, LEGACY_OUT = "local/inference", "local/result"
ROW = dict(zip(NAMES, [0.5, -1.0, 2.0, 0.25], strict=True))
SERVER, CONSUMER, STRANGER = "token-server", "token-consumer", "token-stranger"


@pytest.fixture(scope="module")
def sdk() -> None:
    need(ipc is not None, "awsiotsdk (pip install awsiotsdk)")


@pytest.fixture(scope="module")
def policies(
    sdk: None, named_bundle: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ComponentPolicy]:
    """The policies of the recipes edgeboost generates, and one component with no grants."""
    out = tmp_path_factory.mktemp("gg")
    requests = out / "requests.json"
    requests.write_text(json.dumps([ROW]))
    package = package_bundle(
        named_bundle[0],
        out,
        ComponentOptions(name="com.example.Sensors", version="1.0.0"),
        consumer_requests=requests,
    )
    assert package.consumer_recipe is not None and package.runtime is not None
    return {
        SERVER: load_recipe_policy(package.runtime.recipe),
        CONSUMER: load_recipe_policy(package.consumer_recipe),
        STRANGER: ComponentPolicy("com.example.Stranger"),
    }


@pytest.fixture()
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Unix socket paths must stay short; pytest's tmp paths can be long.
    return Path(tmp_path_factory.mktemp("s", numbered=True)) / "ipc.sock"


@pytest.fixture()
def broker(socket_path: Path, policies: dict[str, ComponentPolicy]) -> Iterator[Broker]:
    with Broker(socket_path, policies) as running:
        yield running


def _wait_subscribed(broker: Broker, timeout: float = 10.0) -> float:
    started = time.monotonic()
    broker.wait_for_subscriptions(
        lambda subs: {REQUEST, LEGACY_IN} <= {s.topic_filter for s in subs}, timeout=timeout
    )
    return time.monotonic() - started


@pytest.fixture()
def server(broker: Broker, named_bundle: tuple[Path, object]) -> Iterator[InferenceServer]:
    from edgeboost.runtime.greengrass import GreengrassTransport

    config = ServerConfig(stats_interval_s=3600, limits=Limits(max_payload_bytes=2048, max_rows=10))
    transport = GreengrassTransport(socket_path=broker.socket_path, auth_token=SERVER)
    running = InferenceServer(Model.load(named_bundle[0]), transport, config)
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    _wait_subscribed(broker)
    yield running
    stop.set()
    thread.join(15)
    assert not thread.is_alive()


@pytest.fixture()
def client(broker: Broker) -> Iterator[Client]:
    consumer = Client(broker.socket_path, CONSUMER)
    consumer.subscribe(RESPONSE)
    consumer.subscribe(LEGACY_OUT)
    yield consumer
    consumer.close()


def test_a_request_is_answered_with_the_same_id(
    server: InferenceServer, client: Client, named_bundle: tuple[Path, object]
) -> None:
    client.publish(REQUEST, json.dumps({"id": "r-1", "instances": [ROW, ROW]}).encode())
    client.publish(REQUEST, {"id": 7, "instances": [list(ROW.values())]})  # a jsonMessage
    first, second = client.wait_for(2)
    expected = Model.load(named_bundle[0]).predict([ROW])
    assert first["id"] == "r-1" and first["predictions"] == expected * 2
    assert first["model"]["sha256"] == server.model.sha256
    assert second["id"] == 7 and second["predictions"] == expected


def test_an_old_style_request_gets_the_old_reply(
    server: InferenceServer, client: Client, named_bundle: tuple[Path, object]
) -> None:
    event = {"body": json.dumps([ROW, ROW]), "isBase64Encoded": False}
    client.publish(LEGACY_IN, json.dumps(event).encode())
    (reply,) = client.wait_for(1)
    assert reply == Model.load(named_bundle[0]).predict([ROW, ROW])


def test_a_component_without_the_grant_is_unauthorized(broker: Broker) -> None:
    from awsiot.greengrasscoreipc.model import UnauthorizedError

    stranger = Client(broker.socket_path, STRANGER)
    try:
        with pytest.raises(UnauthorizedError):
            stranger.subscribe(RESPONSE)
        with pytest.raises(UnauthorizedError):
            stranger.publish(REQUEST, b"{}")
    finally:
        stranger.close()
    consumer = Client(broker.socket_path, CONSUMER)
    try:  # the consumer may ask, but may not listen to the requests of others
        with pytest.raises(UnauthorizedError):
            consumer.subscribe(REQUEST)
    finally:
        consumer.close()


def test_malformed_requests_each_get_an_error_and_serving_goes_on(
    server: InferenceServer, client: Client
) -> None:
    payloads = []
    for name, (payload, code) in MALFORMED.items():
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()  # NaN/inf become NaN/Infinity tokens
            # As text, a 401-digit number is refused by the decoder (over 100 characters).
            code = "bad_json" if name == "value huge int" else code
        payloads.append((payload, code))
    for payload, _ in payloads:
        client.publish(REQUEST, payload)
    client.publish(REQUEST, json.dumps({"id": "after", "instances": [ROW]}).encode())
    replies = client.wait_for(len(payloads) + 1, timeout=20)
    assert len(replies) == len(payloads) + 1
    codes = [r["error"]["code"] for r in replies[:-1]]
    assert codes == [code for _, code in payloads]
    assert replies[-1]["id"] == "after" and "predictions" in replies[-1]


def test_server_resubscribes_after_the_broker_restarts(
    server: InferenceServer,
    broker: Broker,
    socket_path: Path,
    policies: dict[str, ComponentPolicy],
) -> None:
    broker.stop()
    with Broker(socket_path, policies) as restarted:
        seconds = _wait_subscribed(restarted, timeout=2.0)  # the requirement: within 2 s
        consumer = Client(restarted.socket_path, CONSUMER)
        try:
            consumer.subscribe(RESPONSE)
            consumer.publish(REQUEST, json.dumps({"id": "back", "instances": [ROW]}).encode())
            (reply,) = consumer.wait_for(1)
        finally:
            consumer.close()
    assert reply["id"] == "back" and "predictions" in reply
    assert seconds < 2.0


def test_sigterm_during_a_burst_answers_every_received_request(
    broker: Broker, client: Client, named_bundle: tuple[Path, object]
) -> None:
    env = {**os.environ, **broker.client_env(SERVER)}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeboost", "serve", str(named_bundle[0]), "--queue-size", "1000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_subscribed(broker, timeout=30)
        burst = 300
        for i in range(burst):
            client.publish(REQUEST, json.dumps({"id": i, "instances": [ROW] * 5}).encode())
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "WARNING" not in stderr and "ERROR" not in stderr, stderr
    stats = re.findall(r"received (\d+), answered (\d+)", stdout)  # information: stdout
    assert stats, stdout
    received, answered = map(int, stats[-1])
    replies = client.wait_for(received, timeout=10)
    assert received > 0
    assert answered == received == len(replies), stdout
    assert all("predictions" in r for r in replies)
    assert len({r["id"] for r in replies}) == len(replies)

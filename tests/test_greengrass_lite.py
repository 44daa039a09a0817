"""The awsiotsdk client and `edgeboost serve` against a real Greengrass IPC server: nucleus lite.

The access control comes from the recipes `edgeboost package` writes, so these tests also check
that a real Nucleus grants what those recipes ask for. broker/greengrass_lite.py runs Lite.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeboost.broker import greengrass_lite as ggl
from edgeboost.runtime import Model

from .conftest import need
from .greengrass_lite import (
    CONSUMER,
    LISTENER,
    ROW,
    SERVER,
    STRANGER,
    TALKER,
    TEST_COMPONENTS,
    GreengrassLite,
    LiteBuild,
)
from .ipc_client import Client, ipc

if ipc is not None:
    from awscrt.exceptions import AwsCrtError
    from awsiot.eventstreamrpc import ConnectionClosedError, StreamClosedError
    from awsiot.greengrasscoreipc.model import (
        BinaryMessage,
        JsonMessage,
        PublishMessage,
        ServiceError,
        UnauthorizedError,
    )

# The session-scoped fixtures, registered in this module.

REQUEST, RESPONSE = "edgeboost/inference/request", "edgeboost/inference/response"
Connect = Callable[[str], Client]


@contextlib.contextmanager
def connection_closed() -> Iterator[None]:
    """The call fails because the server closed the connection: the SDK says so in one of three
    ways, depending on how far it got with the close when the call started."""
    with pytest.raises((StreamClosedError, ConnectionClosedError, RuntimeError)) as failure:
        yield
    if failure.type is RuntimeError:
        assert "CONNECTION_CLOSED" in str(failure.value)


@pytest.fixture(scope="module")
def sdk() -> None:
    need(ipc is not None, "awsiotsdk (pip install awsiotsdk)")


@pytest.fixture()
def lite(sdk: None, greengrass_lite: GreengrassLite) -> GreengrassLite:
    return greengrass_lite


@pytest.fixture()
def connect(lite: GreengrassLite) -> Iterator[Connect]:
    """connect(component) -> a Client holding that component's token; closed after the test."""
    clients: list[Client] = []

    def make(component: str) -> Client:
        clients.append(Client(lite.socket_path, lite.token(component)))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_a_component_publishes_and_another_receives(connect: Connect) -> None:
    listener, talker = connect(LISTENER), connect(TALKER)
    listener.subscribe("test/hello")
    talker.publish("test/hello", {"n": "one"})
    talker.publish("test/hello", b"raw \x00 bytes")
    assert listener.wait_for_events(2) == [
        ("json", {"n": "one"}, "test/hello"),
        ("binary", b"raw \x00 bytes", "test/hello"),
    ]


def test_a_component_is_refused_what_its_recipe_does_not_grant(connect: Connect) -> None:
    talker, stranger, consumer = connect(TALKER), connect(STRANGER), connect(CONSUMER)
    with pytest.raises(UnauthorizedError):
        talker.publish("other/x", {})
    with pytest.raises(UnauthorizedError):
        talker.subscribe("other/x")
    with pytest.raises(UnauthorizedError):
        stranger.subscribe("test/hello")
    with pytest.raises(UnauthorizedError):  # the consumer may ask, not listen to others' asks
        consumer.subscribe(REQUEST)
    consumer.publish(REQUEST, {"id": "granted", "instances": []})
    # A refusal ends that call only: the connection still works.
    talker.subscribe("test/still")
    talker.publish("test/still", {"ok": True})
    assert talker.wait_for_events(1) == [("json", {"ok": True}, "test/still")]


def test_a_process_outside_a_components_unit_cannot_claim_its_token(lite: GreengrassLite) -> None:
    with pytest.raises(RuntimeError, match="refused"):
        lite.request_token(STRANGER, claim=TALKER)
    assert lite.request_token(TALKER) == lite.token(TALKER)  # one token per component


def test_edgeboost_serve_answers_a_consumer_over_lite(
    lite: GreengrassLite, connect: Connect, named_bundle: tuple[Path, object]
) -> None:
    env = {**os.environ, **lite.client_env(SERVER)}
    command = [sys.executable, "-m", "edgeboost", "serve", str(named_bundle[0])]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        consumer = connect(CONSUMER)
        consumer.subscribe(RESPONSE)
        # Lite cannot list subscriptions: ask until the server, once subscribed, answers.
        deadline = time.monotonic() + 30
        while not consumer.wait_for(1, timeout=0.2) and time.monotonic() < deadline:
            assert server.poll() is None, server.communicate()[1]
            consumer.publish(REQUEST, json.dumps({"id": "probe", "instances": [ROW]}).encode())
        # Requests stay far below Lite's 10,000-byte message limit.
        consumer.publish(REQUEST, json.dumps({"id": "r-1", "instances": [ROW, ROW]}).encode())
        consumer.publish(REQUEST, {"id": 7, "instances": [list(ROW.values())]})  # a jsonMessage
        replies = []
        while len(replies) < 2 and time.monotonic() < deadline + 10:
            replies = [r for r in consumer.wait_for(0) if r.get("id") != "probe"]
            time.sleep(0.05)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr
    expected = Model.load(named_bundle[0]).predict([ROW])
    assert [reply.get("id") for reply in replies] == ["r-1", 7], (consumer.events, stderr)
    assert replies[0]["predictions"] == expected * 2
    assert replies[1]["predictions"] == expected


def test_restarting_ggipcd_keeps_the_socket_and_forgets_the_tokens(
    lite: GreengrassLite, connect: Connect
) -> None:
    old = lite.token(TALKER)
    before = connect(TALKER)
    lite.restart_ipc()
    with pytest.raises(AwsCrtError, match="SOCKET_CLOSED"):  # ggipcd keeps tokens in memory
        Client(lite.socket_path, old)
    with connection_closed():
        before.publish("test/a", {})
    assert lite.token(TALKER) != old
    after = connect(TALKER)
    after.subscribe("test/back")
    after.publish("test/back", {"n": 1})
    assert after.wait_for_events(1) == [("json", {"n": 1}, "test/back")]


def test_lite_keeps_integers_and_refuses_json_with_binary(connect: Connect) -> None:
    # The Java Nucleus (and so the broker) delivers {"n": 1.0}; all three refuse both parts.
    listener, talker = connect(LISTENER), connect(TALKER)
    listener.subscribe("test/numbers")
    talker.publish("test/numbers", {"n": 1, "big": 2**53 + 1, "x": 0.5})
    ((_, message, _),) = listener.wait_for_events(1)
    assert message == {"n": 1, "big": 2**53 + 1, "x": 0.5}
    assert type(message["n"]) is int
    both = PublishMessage(
        json_message=JsonMessage(message={}), binary_message=BinaryMessage(message=b"")
    )
    with pytest.raises(ServiceError):
        talker.v2.publish_to_topic(topic="test/numbers", publish_message=both)


def test_an_oversize_message_closes_only_its_own_connection(connect: Connect) -> None:
    listener, big, other = connect(LISTENER), connect(TALKER), connect(TALKER)
    listener.subscribe("test/size")
    # ggipcd's GGL_IPC_MAX_MSG_LEN is 10,000 bytes a message, headers and base64 included.
    big.publish("test/size", b"x" * 7299)
    with connection_closed():
        big.publish("test/size", b"x" * 7300)
    with connection_closed():  # the whole connection, not just that call
        big.publish("test/size", b"small")
    other.publish("test/size", b"after")
    assert [body for _, body, _ in listener.wait_for_events(2)] == [b"x" * 7299, b"after"]


def test_stopping_leaves_no_process_cgroup_or_mount(
    lite_build: LiteBuild, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lite = GreengrassLite(
        lite_build.daemons, tmp_path_factory.mktemp("ggl"), TEST_COMPONENTS, shim=lite_build.shim
    )
    with lite:
        pids = lite.pids()
        assert set(pids) == {"ggconfigd", "ggpubsubd", "ggipcd", "namespace"}
        # Holding the namespace open keeps its id from going to another one (a parallel
        # session's) until we have looked for processes still in it.
        namespace_fd = os.open(f"/proc/{pids['namespace']}/ns/mnt", os.O_RDONLY)
        namespace = os.readlink(f"/proc/self/fd/{namespace_fd}")
        assert namespace != os.readlink("/proc/self/ns/mnt")
        assert "ggl-run /run tmpfs" in Path(f"/proc/{pids['namespace']}/mounts").read_text()
        lite.token(TALKER)  # through a cgroup, where cgroups are writable
        assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())
    try:
        assert lite.leftovers() == []
        in_namespace = [
            entry.name
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _mount_namespace(entry) == namespace
        ]
        assert in_namespace == []
    finally:
        os.close(namespace_fd)  # the namespace, and the tmpfs on its /run, go now


def test_tokens_through_the_preload_shim(
    sdk: None, lite_build: LiteBuild, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Where cgroups are not writable (most containers), the shim stands in for systemd."""
    need(shutil.which("cc") is not None, "a C compiler (cc) for the token shim")
    shim = lite_build.shim or ggl.build_shim(lite_build.daemons)
    root = tmp_path_factory.mktemp("ggl")
    with GreengrassLite(lite_build.daemons, root, TEST_COMPONENTS, shim=shim) as lite:
        with pytest.raises(RuntimeError, match="refused"):
            lite.request_token(STRANGER, claim=TALKER)
        talker = Client(lite.socket_path, lite.token(TALKER))
        try:
            talker.subscribe("test/shim")
            talker.publish("test/shim", {"via": "shim"})
            assert talker.wait_for_events(1) == [("json", {"via": "shim"}, "test/shim")]
        finally:
            talker.close()
    assert lite.leftovers() == []


def _mount_namespace(process: Path) -> str | None:
    try:
        return os.readlink(process / "ns" / "mnt")
    except OSError:  # gone, or a kernel thread
        return None

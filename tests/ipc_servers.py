"""The two Greengrass IPC servers the tests compare, behind one small interface: the local broker
and nucleus lite (broker/greengrass_lite.py). Both declare the same components: TALKER (publish
and subscribe on ``test/*``), LISTENER (subscribe to ``*``) and STRANGER (nothing).

A test module registers the fixtures it uses (``ipc_server = ipc_servers.ipc_server`` etc.,
and nucleus lite's ``lite_build``, ``edgeboost_package`` and ``greengrass_lite``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from edgeboost.broker import Broker

from .greengrass_lite import TEST_COMPONENTS, GreengrassLite
from .raw_ipc import RawIpc

BROKER, LITE = "broker", "greengrass-lite"
SUBSCRIBE, PUBLISH = "aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"


@dataclass(frozen=True)
class IpcServer:
    kind: str  # BROKER or LITE
    socket_path: str
    token: Callable[[str], str]  # component name -> its SVCUID

    def __str__(self) -> str:
        return self.kind

    def raw(self, component: str | None = None) -> RawIpc:
        """A raw connection, logged in as ``component`` unless it is None."""
        client = RawIpc(self.socket_path)
        if component is not None:
            ack = client.connect(self.token(component))
            assert ack.flags == 1, f"{self}: CONNECT as {component} refused"
        return client


@contextlib.contextmanager
def running_broker() -> Iterator[IpcServer]:
    """A broker serving TEST_COMPONENTS, its socket under a short path (108-byte limit)."""
    tokens = {f"tok-{policy.name}": policy for policy in TEST_COMPONENTS}
    with (
        tempfile.TemporaryDirectory(prefix="eb-") as folder,
        Broker(Path(folder) / "ipc.sock", tokens) as broker,
    ):
        yield IpcServer(BROKER, broker.socket_path, lambda name: f"tok-{name}")


def lite_server(lite: GreengrassLite) -> IpcServer:
    return IpcServer(LITE, lite.socket_path, lite.token)


@pytest.fixture()
def broker_server() -> Iterator[IpcServer]:
    with running_broker() as server:
        yield server


@pytest.fixture()
def lite_ipc_server(greengrass_lite: GreengrassLite) -> IpcServer:
    return lite_server(greengrass_lite)


@pytest.fixture(params=[BROKER, LITE])
def ipc_server(request: pytest.FixtureRequest) -> Iterator[IpcServer]:
    """Each test runs against the broker, then nucleus lite (skipped where it cannot run)."""
    if request.param == BROKER:
        with running_broker() as server:
            yield server
    else:
        yield lite_server(request.getfixturevalue("greengrass_lite"))

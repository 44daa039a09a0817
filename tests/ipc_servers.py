"""The two Greengrass IPC servers the tests compare, behind one small interface: the local broker
and nucleus lite (broker/greengrass_lite.py). Both declare the same components: TALKER (publish
and subscribe on ``test/*``), LISTENER (subscribe to ``*``) and STRANGER (nothing). The
configuration tests' servers (``config_server``) add MODEL, with TEST_CONFIGURATIONS.

A test module registers the fixtures it uses (``ipc_server = ipc_servers.ipc_server`` etc.,
and nucleus lite's ``lite_build``, ``edgeboost_package`` and ``greengrass_lite``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeboost.broker import Broker, ComponentPolicy
from edgeboost.broker.greengrass_lite import LiteBuild, lite_configuration

from .greengrass_lite import CONFIG_COMPONENTS, TEST_COMPONENTS, TEST_CONFIGURATIONS, GreengrassLite
from .raw_ipc import RawIpc

BROKER, LITE = "broker", "greengrass-lite"
SUBSCRIBE, PUBLISH = "aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"


@dataclass(frozen=True)
class IpcServer:
    kind: str  # BROKER or LITE
    socket_path: str
    token: Callable[[str], str]  # component name -> its SVCUID
    broker: Broker | None = None  # the broker itself, to look inside (BROKER only)

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
def running_broker(
    components: Iterable[ComponentPolicy] = TEST_COMPONENTS,
    configurations: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[IpcServer]:
    """A broker serving ``components``, its socket under a short path (108-byte limit)."""
    tokens = {f"tok-{policy.name}": policy for policy in components}
    with (
        tempfile.TemporaryDirectory(prefix="eb-") as folder,
        Broker(Path(folder) / "ipc.sock", tokens, configurations=configurations) as broker,
    ):
        yield IpcServer(BROKER, broker.socket_path, lambda name: f"tok-{name}", broker)


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


@pytest.fixture(params=[BROKER, LITE])
def config_server(request: pytest.FixtureRequest) -> Iterator[IpcServer]:
    """A new server for each test, declaring CONFIG_COMPONENTS with TEST_CONFIGURATIONS: a
    configuration a test changed would outlive it on the session's nucleus lite. Both hold the
    configuration Lite is given: the defaults, and the policy as accessControl."""
    if request.param == BROKER:
        configurations = {
            policy.name: lite_configuration(policy, TEST_CONFIGURATIONS.get(policy.name))
            for policy in CONFIG_COMPONENTS
        }
        with running_broker(CONFIG_COMPONENTS, configurations) as server:
            yield server
        return
    build: LiteBuild = request.getfixturevalue("lite_build")
    root = request.getfixturevalue("tmp_path_factory").mktemp("ggl")
    with GreengrassLite(
        build.daemons,
        root,
        CONFIG_COMPONENTS,
        configurations=TEST_CONFIGURATIONS,
        shim=build.shim,
    ) as lite:
        yield lite_server(lite)
    assert not lite.leftovers(), f"nucleus lite left {lite.leftovers()} behind"

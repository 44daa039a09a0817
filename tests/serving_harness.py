"""Serving as it runs on a device, for fault tests: the IPC broker and ``edgeboost serve`` as
separate processes (so they can be stopped, killed and signalled), and a consumer component
using the real awsiotsdk V2 client."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REQUEST, RESPONSE = "edgeboost/inference/request", "edgeboost/inference/response"
LEGACY_IN, LEGACY_OUT = "local/inference", "local/result"
PUBLISH, SUBSCRIBE = "aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"


def write_recipe(
    path: Path, name: str, *, publish: Iterable[str] = (), subscribe: Iterable[str] = ()
) -> Path:
    """A JSON recipe whose accessControl grants exactly these topics."""
    policies: dict[str, Any] = {}
    for operation, topics in ((PUBLISH, list(publish)), (SUBSCRIBE, list(subscribe))):
        if topics:
            policies[f"{name}:{operation}"] = {"operations": [operation], "resources": topics}
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {
            "DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.pubsub": policies}}
        },
    }
    path.write_text(json.dumps(recipe))
    return path


class BrokerProcess:
    """``python -m edgeboost.broker`` with one recipe per token."""

    kind = "broker"

    def __init__(self, socket_path: Path, recipes: dict[str, Path]) -> None:
        self.socket_path, self.recipes = socket_path, recipes
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> BrokerProcess:
        command = [sys.executable, "-m", "edgeboost.broker", "--socket", str(self.socket_path)]
        for token, recipe in self.recipes.items():
            command += ["--recipe", f"{recipe}:{token}"]
        # Its log (states components report, among others) goes to a file beside the socket.
        self.log_path = self.socket_path.with_suffix(".log")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not _accepts(self.socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the broker did not start ({self.process.poll()})")
            time.sleep(0.02)
        return self

    def env(self, token: str) -> dict[str, str]:
        return {
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(self.socket_path),
            "SVCUID": token,
        }

    def signal(self, signum: int) -> None:
        assert self.process is not None
        send_signal(self.process.pid, signum)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    close = kill


def send_signal(pid: int, signum: int) -> None:
    """Signal ``pid``; for SIGSTOP, return only once it is stopped (delivery is asynchronous,
    and a test that acts before then races the process it meant to freeze)."""
    os.kill(pid, signum)
    if signum == signal.SIGSTOP:
        stat = Path(f"/proc/{pid}/stat")
        wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] in "Tt", 5)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


_STATS = re.compile(
    r"received (?P<received>\d+), answered (?P<answered>\d+) \(\d+ rows\), "
    r"overloaded (?P<overloaded>\d+), errors (?P<errors>\{.*?\}), published (?P<published>\d+), "
    r"publish failures (?P<failures>\{.*?\}), shed (?P<shed>\d+), abandoned (?P<abandoned>\d+), "
    r"reconnects (?P<reconnects>\d+).*?model swaps (?P<model_swaps>\d+) "
    r"\(refused (?P<model_refused>\d+)\)"
)


class ServerProcess:
    """``python -m edgeboost serve BUNDLE`` as the Nucleus runs it, logs kept in files."""

    def __init__(self, bundle: Path, env: dict[str, str], logs: Path, *args: str) -> None:
        self.command = [sys.executable, "-m", "edgeboost", "serve", str(bundle), *args]
        self.env = {**os.environ, **env}
        self.stdout_path, self.stderr_path = logs / "serve.out", logs / "serve.err"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=err)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_serving(self, timeout: float = 30.0) -> None:
        wait_until(
            lambda: "INFO edgeboost.runtime.server: serving " in self.stdout,
            timeout,
            lambda: f"not serving:\n{self.stdout}\n{self.stderr}",
        )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        send_signal(self.process.pid, signum)

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took)."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        return self.wait(timeout), time.monotonic() - started

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"no exit within {timeout} s:\n{self.stdout}\n{self.stderr}"
            ) from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]

    def last_stats(self) -> dict[str, Any]:
        """The counters of the last stats line (the one written at exit, after a stop)."""
        found = list(_STATS.finditer(self.stdout))
        assert found, f"no stats line:\n{self.stdout}\n{self.stderr}"
        fields: dict[str, Any] = found[-1].groupdict()
        for key in ("errors", "failures"):
            fields[key] = ast.literal_eval(fields[key])  # the repr of a dict of str -> int
        return {k: int(v) if isinstance(v, str) else v for k, v in fields.items()}


class Consumer:
    """A component with the real awsiotsdk V2 client, collecting what arrives."""

    def __init__(self, env: dict[str, str]) -> None:
        import awsiot.greengrasscoreipc as ipc
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        self.v2 = GreengrassCoreIPCClientV2(
            client=ipc.connect(
                ipc_socket=env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
                authtoken=env["SVCUID"],
            )
        )
        self.received: list[Any] = []
        self._arrived = threading.Condition()

    def subscribe(self, topic: str) -> Consumer:
        self.v2.subscribe_to_topic(topic=topic, on_stream_event=self._on_event)
        return self

    def _on_event(self, event: Any) -> None:
        message = event.binary_message or event.json_message
        body = message.message
        with self._arrived:
            self.received.append(json.loads(body) if isinstance(body, bytes) else body)
            self._arrived.notify_all()

    def publish(self, topic: str, payload: Any, *, wait: bool = True) -> Any:
        """Bytes as a binaryMessage, anything else as a jsonMessage."""
        from awsiot.greengrasscoreipc.model import BinaryMessage, JsonMessage, PublishMessage

        if isinstance(payload, bytes):
            message = PublishMessage(binary_message=BinaryMessage(message=payload))
        else:
            message = PublishMessage(json_message=JsonMessage(message=payload))
        if wait:
            return self.v2.publish_to_topic(topic=topic, publish_message=message)
        return self.v2.publish_to_topic_async(topic=topic, publish_message=message)

    def wait_for(self, count: int, timeout: float) -> list[Any]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def close(self) -> None:
        self.v2.close()


def request(request_id: Any, rows: list[Any]) -> bytes:
    return json.dumps({"id": request_id, "instances": rows}).encode()


def wait_until(
    condition: Callable[[], bool], timeout: float, describe: Callable[[], str] = lambda: ""
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s {describe()}")
        time.sleep(0.02)


class LiteProcess:
    """Nucleus lite serving the same components as a BrokerProcess: ``recipes`` maps each role
    (the broker's token) to the recipe whose component and access control it declares."""

    kind = "greengrass-lite"

    def __init__(self, build: Any, root: Path, recipes: dict[str, Path]) -> None:
        from edgeboost.broker.recipe import load_recipe

        from .greengrass_lite import GreengrassLite

        declared = {role: load_recipe(path) for role, path in recipes.items()}
        self.names = {role: component.policy.name for role, component in declared.items()}
        self.lite = GreengrassLite(
            build.daemons,
            root,
            [component.policy for component in declared.values()],
            shim=build.shim,
            configurations={c.policy.name: c.configuration for c in declared.values()},
        )
        self._running = False

    def start(self, timeout: float = 15.0) -> LiteProcess:
        if self._running:
            self.lite.start_ipc(timeout)  # tokens are new: components must ask again
        else:
            self.lite.start(timeout)
            self._running = True
        return self

    def env(self, role: str) -> dict[str, str]:
        return self.lite.client_env(self.names[role])

    def signal(self, signum: int) -> None:
        send_signal(self.lite.pids()["ggipcd"], signum)

    def kill(self) -> None:
        self.lite.stop_ipc()

    def close(self) -> None:
        self.lite.stop()
        assert not self.lite.leftovers(), self.lite.leftovers()

"""End to end on emulated devices: what Greengrass deploys, run as Greengrass runs it.

For each device, a Debian userland under qemu-user (bookworm arm64: Python 3.11; bullseye
armhf: Python 3.9, the device minimum, with cffi 1.14): the platform's zips from
``edgeboost package`` (the inference component's and the model component's) are unpacked where
the Java Nucleus puts them inside the userland, and the generated inference recipe's own
Install script and Run command (its variables filled in as the Java Nucleus does) run with
``sh -c``, ``python3`` being the userland's interpreter. The component serves the example
consumer's requests through the project's broker on the host, with the generated recipes'
access control; the consumer is the real awsiotsdk client. Its predictions must equal the
host's, and SIGTERM must stop it with exit 0.

Needs the cross compilers, qemu-user-static, a Debian archive apt can reach (compile/debian.py)
and awsiotsdk; skips locally without them and fails in CI. Userlands are cached
(~/.cache/edgeboost/emulation): only the first run on a machine downloads them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeboost.broker import Broker, load_recipe, load_recipe_policy
from edgeboost.compile.emulation import (
    EmulationError,
    default_cache_dir,
    prepare_python_root,
    python3,
    qemu_prefix,
)
from edgeboost.recipes import ComponentOptions, Package, package_bundle
from edgeboost.runtime import Model
from edgeboost.runtime.targets import MIN_PYTHON, TARGETS

from .compiled_case import with_tool
from .conftest import REPO, SHIPPED_MODEL, need
from .serving_harness import Consumer, request

CACHE = default_cache_dir()
REQUESTS = REPO / "models" / "wine-quality" / "requests.json"
OPTIONS = ComponentOptions(name="com.example.WineQuality", version="1.0.0")
# name: (Debian suite, zip, python3 --version)
DEVICES = {
    "bookworm-arm64": ("bookworm", "aarch64-linux-gnu", "3.11."),
    "bullseye-armhf": ("bullseye", "armv7-linux-gnueabihf", "3.9."),
}
# Greengrass's own variables (another component's too); an unfilled one would reach the shell
# as literal text.
_VARIABLE = re.compile(r"\{(?:[\w.-]+:)?(?:artifacts|configuration|work|iot|kernel):[^}]*\}")
# edgeboost serve promises to exit within 4 s of SIGTERM (the Nucleus SIGKILLs a component
# 5 s after it); under qemu that holds too, measured each run (idle after the requests: ~0.02 s).
STOP_SECONDS = 4.0
NO_CFFI = "edgeboost needs python3-cffi: apt-get install python3-cffi\n"


@pytest.fixture(scope="module")
def bundle(compile_once: Callable[..., Path]) -> Path:
    need(shutil.which("aarch64-linux-gnu-gcc") is not None, "aarch64-linux-gnu-gcc")
    need(shutil.which("arm-linux-gnueabihf-gcc") is not None, "arm-linux-gnueabihf-gcc")
    return compile_once(SHIPPED_MODEL, "e2e-wine-quality", ("all",))


@pytest.fixture(scope="module")
def package(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Package:
    output = tmp_path_factory.mktemp("greengrass-build")
    return package_bundle(bundle, output, OPTIONS, consumer_requests=REQUESTS)


def _userland(suite: str, triple: str) -> Path:
    what = f"a {suite} {triple} userland"
    try:
        return with_tool(what, lambda: prepare_python_root(triple, CACHE, suite=suite))
    except EmulationError as exc:  # no route to the Debian mirror, an apt failure
        need(False, f"{what} [{exc}]")
        raise


class Device:
    """The unpacked zips inside a userland, and the inference recipe's lifecycle for its
    platform."""

    def __init__(self, root: Path, triple: str, package: Package, scratch: Path) -> None:
        assert package.runtime is not None and package.model is not None
        self.root, self.triple = root, triple
        self.folder = Path(tempfile.mkdtemp(prefix="e2e-", dir=_mkdir(root / "greengrass")))
        # Where the Java Nucleus unpacks a zip: <root>/packages/artifacts-unarchived/<component>/
        # <version>/<zip name less .zip>/ (NucleusPaths.unarchiveArtifactPath), the folder
        # above being the component's {artifacts:decompressedPath}.
        unarchived = self.folder / "packages" / "artifacts-unarchived"
        self.paths: dict[str, Path] = {}
        for component in (package.runtime, package.model):
            path = _mkdir(unarchived / component.name / component.version)
            with zipfile.ZipFile(component.zips[triple]) as archive:
                archive.extractall(path / component.zips[triple].stem)
            self.paths[component.name] = path
        self.decompressed = self.paths[package.runtime.name]
        # Lifecycle scripts run in the component's work folder ({work:path}), never in the
        # checkout: python3 -c puts the current folder first on sys.path.
        self.work = _mkdir(self.folder / "work")
        recipe = yaml.safe_load(package.runtime.recipe.read_text())
        # The Java Nucleus fills in another component's variables only for a direct
        # dependency (KernelConfigResolver.replace).
        self.dependencies = set(recipe.get("ComponentDependencies", {}))
        self.configuration = recipe["ComponentConfiguration"]["DefaultConfiguration"]
        architecture = TARGETS[triple].greengrass_architecture
        (manifest,) = (
            m for m in recipe["Manifests"] if m["Platform"]["architecture"] == architecture
        )
        self.lifecycle = manifest["Lifecycle"]
        # python3 on PATH is the userland's, under qemu: the recipe calls nothing else.
        self.bin = _mkdir(scratch / "bin")
        command = [*qemu_prefix(triple, sysroot=root), str(python3(root))]
        (self.bin / "python3").write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
        (self.bin / "python3").chmod(0o755)

    def script(self, step: str) -> str:
        text = str(self.lifecycle[step]["Script"])
        text = text.replace("{artifacts:decompressedPath}", str(self.decompressed))
        text = text.replace("{kernel:rootPath}", str(self.folder))
        text = text.replace("{work:path}", str(self.work))
        for name in self.dependencies:
            text = text.replace(f"{{{name}:artifacts:decompressedPath}}", str(self.paths[name]))
        text = re.sub(
            r"\{configuration:/(\w+)\}", lambda m: str(self.configuration[m.group(1)]), text
        )
        assert not _VARIABLE.search(text), text
        return text

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "LANG": "C.UTF-8", **extra}

    def python3(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "python3"), "-c", code],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.work,
        )

    def install(self) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        result = subprocess.run(
            ["sh", "-c", self.script("Install")],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.work,
            timeout=float(self.lifecycle["Install"]["Timeout"]) + 60,
        )
        return result, time.monotonic() - started

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(params=list(DEVICES))
def device(
    request: pytest.FixtureRequest, package: Package, tmp_path: Path
) -> Iterator[tuple[Device, str]]:
    suite, triple, python_version = DEVICES[request.param]
    running = Device(_userland(suite, triple), triple, package, tmp_path)
    yield running, python_version
    running.close()


@pytest.fixture()
def sdk() -> None:
    try:
        import awsiot.greengrasscoreipc  # noqa: F401
    except ImportError:
        need(False, "awsiotsdk (pip install awsiotsdk)")


def _timings(request: pytest.FixtureRequest, **seconds: float) -> None:
    """Shown by ``pytest -rA`` (README's numbers come from there)."""
    for name, value in seconds.items():
        request.node.user_properties.append((name, round(value, 2)))
    print(" ".join(f"{k}={v:.2f}s" for k, v in seconds.items()))


def test_install_then_run_answers_like_the_host(
    sdk: None,
    device: tuple[Device, str],
    bundle: Path,
    package: Package,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    dev, python_version = device
    version = dev.python3("import sys, cffi; print(sys.version, cffi.__version__)")
    assert version.stdout.startswith(python_version), version
    assert tuple(map(int, python_version.split(".")[:2])) >= MIN_PYTHON

    installed, install_seconds = dev.install()
    assert (installed.returncode, installed.stderr) == (0, ""), installed
    assert install_seconds < dev.lifecycle["Install"]["Timeout"]
    # Install compiled the runtime, and the standard library it imports, into the work folder
    # (the artifacts are read-only on a device): Run compiles nothing.
    compiled = set(dev.work.rglob("*.pyc"))
    assert any(p.name.startswith("server.") for p in compiled), installed

    records = json.loads(REQUESTS.read_text())
    expected = Model.load(bundle).predict(records)  # this machine's library, on this Python
    replies, code, seconds, logs = _serve(dev, package, records, tmp_path)
    _timings(request, install=install_seconds, **seconds)
    assert f"target {dev.triple}" in logs, logs
    by_id = {r["id"]: r for r in replies if isinstance(r, dict)}
    answered = [by_id.get(i, {}).get("predictions") for i in range(len(records))]
    assert answered == [[p] for p in expected], logs
    assert [r for r in replies if isinstance(r, list)] == [expected], logs  # the legacy reply
    assert code == 0, logs
    assert sorted(map(str, set(dev.work.rglob("*.pyc")) - compiled)) == [], "Run compiled"
    # and wrote nothing beside the artifacts (as root here, it could have).
    assert not list(dev.decompressed.rglob("__pycache__")), logs
    assert seconds["stop"] < STOP_SECONDS, f"SIGTERM took {seconds['stop']:.2f} s:\n{logs}"


def _serve(
    dev: Device, package: Package, records: list[Any], logs: Path
) -> tuple[list[Any], int, dict[str, float], str]:
    """Run the recipe's Run command against a broker that enforces both generated recipes,
    ask it what the example consumer asks, then SIGTERM it as the Nucleus does.

    Returns the replies, the exit status, the seconds each phase took and the component's log.
    """
    assert package.consumer_recipe is not None and package.runtime is not None
    server_token, consumer_token = "token-e2e-server", "token-e2e-consumer"
    assert package.model is not None
    policies = {
        server_token: load_recipe_policy(package.runtime.recipe),
        consumer_token: load_recipe_policy(package.consumer_recipe),
        "token-e2e-model": load_recipe_policy(package.model.recipe),
    }
    # The model component's Bundle configuration, which the server reads at start.
    model = load_recipe(package.model.recipe)
    configurations = {model.policy.name: model.configuration}
    topics = {str(dev.configuration[k]) for k in ("RequestTopic", "LegacyRequestTopic")}
    out, err = logs / "run.out", logs / "run.err"
    seconds: dict[str, float] = {}
    # Unix socket paths must stay short; pytest's tmp paths can be long.
    with (
        tempfile.TemporaryDirectory(prefix="e2e-") as short,
        Broker(Path(short) / "ipc.sock", policies, configurations=configurations) as broker,
        open(out, "wb") as stdout,
        open(err, "wb") as stderr,
    ):
        started = time.monotonic()
        server = subprocess.Popen(
            ["sh", "-c", dev.script("Run")],
            env=dev.env(**broker.client_env(server_token)),
            cwd=dev.work,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            while True:  # until it subscribes; not a minute more once it has exited
                try:
                    broker.wait_for_subscriptions(
                        lambda subs: topics <= {s.topic_filter for s in subs}, timeout=1
                    )
                    break
                except TimeoutError:
                    if server.poll() is not None or time.monotonic() - started > 120:
                        never = f"never subscribed:\n{out.read_text()}{err.read_text()}"
                        raise AssertionError(never) from None
            seconds["start"] = time.monotonic() - started
            consumer = Consumer(broker.client_env(consumer_token))
            try:
                replies, seconds["requests"] = _ask(consumer, dev.configuration, records)
            finally:
                consumer.close()
            stopping = time.monotonic()
            server.send_signal(signal.SIGTERM)
            code = server.wait(60)
            seconds["stop"] = time.monotonic() - stopping
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    return replies, code, seconds, f"{out.read_text()}{err.read_text()}"


def _ask(
    consumer: Consumer, configuration: dict[str, Any], records: list[Any]
) -> tuple[list[Any], float]:
    """What the example consumer sends: each record as a request with an id on the request
    topic, then all of them as one old Lambda-style event on the legacy topic."""
    consumer.subscribe(str(configuration["ResponseTopic"]))
    consumer.subscribe(str(configuration["LegacyResponseTopic"]))
    started = time.monotonic()
    for request_id, record in enumerate(records):
        consumer.publish(str(configuration["RequestTopic"]), request(request_id, [record]))
    legacy = {"body": json.dumps(records), "isBase64Encoded": False}
    consumer.publish(str(configuration["LegacyRequestTopic"]), json.dumps(legacy).encode())
    replies = consumer.wait_for(len(records) + 1, timeout=120)
    return replies, time.monotonic() - started


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another filesystem
        shutil.copy2(source, destination)


def _without_cffi(root: Path, copy: Path) -> Path:
    """The userland as if python3-cffi and python3-cffi-backend were not installed: a
    hard-linked copy (files in it are only ever unlinked or replaced) without their files."""
    shutil.copytree(root, copy, symlinks=True, copy_function=_link_or_copy)
    dist_packages = copy / "usr" / "lib" / "python3" / "dist-packages"
    for pattern in ("cffi", "cffi-*", "_cffi_backend*"):
        for path in dist_packages.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return copy


@pytest.mark.parametrize("name", list(DEVICES))
def test_install_without_cffi_names_python3_cffi(
    name: str, package: Package, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    suite, triple, python_version = DEVICES[name]
    root = _without_cffi(_userland(suite, triple), tmp_path / "root")
    dev = Device(root, triple, package, tmp_path)
    probe = dev.python3("import sys; print(sys.version); import cffi")
    # The premise: this python3 starts, and has no cffi (not even the host's).
    assert probe.stdout.startswith(python_version), probe
    assert "No module named 'cffi'" in probe.stderr, probe
    installed, seconds = dev.install()
    _timings(request, install=seconds)
    assert (installed.returncode, installed.stderr) == (1, NO_CFFI), installed

"""``edgeboost demo``: the whole Greengrass system on one machine, no AWS account needed.

1. package the bundle as the Greengrass components would be deployed (model, inference and
   consumer);
2. start an IPC server with the access control of both recipes: the local broker (the
   default), or Greengrass nucleus lite (AWS's C Nucleus, built from its source tarball; root);
3. start the inference component from its unpacked zips (the runtime's and the model's),
   with ``python3 -m edgeboost serve BUNDLE`` and the IPC socket and its token in its
   environment (on a device, Greengrass finds the model through the model component);
4. run the example consumer component: new-style requests, then one old Lambda-style request;
5. stop the server with SIGTERM, as Greengrass does, and check it exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edgeboost.broker import Broker, ComponentPolicy, greengrass_lite, load_recipe_policy
from edgeboost.broker.greengrass_lite import GreengrassLite, LiteBuild
from edgeboost.recipes import ComponentOptions, package_bundle, unpack_on_this_machine
from edgeboost.runtime.exceptions import EdgeboostError
from edgeboost.runtime.targets import host_target

__all__ = ["run_demo"]

NAME, VERSION = "com.example.WineQuality", "1.0.0"
# Nucleus lite closes the connection of a message over 10,000 bytes (base64 included).
LITE_LIMITS = ("--max-payload-bytes", "7000", "--max-reply-bytes", "7000")
SERVING = "edgeboost.runtime.server: serving "  # the server's log line once it is subscribed

ClientEnv = Callable[[str], dict[str, str]]  # component name -> socket and token variables
Say = Callable[[str], object]


def _say(text: str) -> None:
    print(text, flush=True)  # in order with the components' output, also into a pipe


def run_demo(
    bundle: Path,
    requests: Path,
    *,
    repeat: int = 1,
    ipc_server: str = "broker",  # or "greengrass-lite"
    ggl_source: Path | None = None,
    say: Say = _say,
) -> int:
    lite = _build_lite(ggl_source, say) if ipc_server == "greengrass-lite" else None
    options = ComponentOptions(name=NAME, version=VERSION)
    logging.getLogger("edgeboost.broker").setLevel(logging.WARNING)  # the demo shows replies
    with tempfile.TemporaryDirectory(prefix="edgeboost-demo-") as scratch:
        work = Path(scratch)
        package = package_bundle(
            bundle, work / "greengrass-build", options, consumer_requests=requests
        )
        runtime, model = package.runtime, package.model
        assert runtime is not None and model is not None
        assert package.consumer_recipe is not None and package.consumer_artifacts is not None
        say(
            f"packaged {model.recipe.name}, {runtime.recipe.name} and "
            f"{package.consumer_recipe.name}"
        )
        device = work / "device"
        unpack_on_this_machine(package, device, host_target())

        server_policy = load_recipe_policy(runtime.recipe)
        consumer_policy = load_recipe_policy(package.consumer_recipe)
        policies = [server_policy, consumer_policy]
        command = [sys.executable, "-u", "-m", "edgeboost", "serve", "bundle"]
        command += ["--stats-interval", "3600"]
        if lite is None:
            running = _broker(work, policies, say)
        else:
            running = _nucleus_lite(work, policies, lite, say)
            command += LITE_LIMITS
        with running as client_env:
            env = _component_env(client_env(server_policy.name), pythonpath=device)
            server = subprocess.Popen(command, cwd=device, env=env, stdout=subprocess.PIPE)
            serving = threading.Event()
            echo = threading.Thread(target=_echo, args=(server, serving))
            echo.start()
            try:
                _wait_serving(server, serving, timeout=30)
                say("inference component subscribed; running the consumer component")
                consumer = [sys.executable, "-u", str(package.consumer_artifacts / "consumer.py")]
                consumer += ["--requests", str(package.consumer_artifacts / "requests.json")]
                env = _component_env(client_env(consumer_policy.name))
                failures = subprocess.run([*consumer, "--repeat", str(repeat)], env=env).returncode
                say("the same records as an old Lambda-style request on local/inference:")
                failures += subprocess.run([*consumer, "--legacy"], env=env).returncode
            finally:
                server.send_signal(signal.SIGTERM)
                code = server.wait(timeout=60)
                echo.join()
            say(f"inference component stopped on SIGTERM with exit code {code}")
    if failures or code != 0:
        raise EdgeboostError(
            f"demo failed: consumer exit codes {failures}, server exit code {code}"
        )
    return 0


@contextlib.contextmanager
def _broker(work: Path, policies: list[ComponentPolicy], say: Say) -> Iterator[ClientEnv]:
    tokens = {policy.name: secrets.token_hex(8) for policy in policies}
    components = {tokens[policy.name]: policy for policy in policies}
    with Broker(work / "ipc.sock", components) as broker:
        say(f"broker listening on {broker.socket_path}")
        yield lambda name: broker.client_env(tokens[name])


def _build_lite(source: Path | None, say: Say) -> LiteBuild:
    """Nucleus lite's daemons, built on first use; a one-line error for what is missing."""
    tarball = source or greengrass_lite.default_source()
    if tarball is None or not tarball.is_file():
        found = "no nucleus lite sources found" if tarball is None else f"{tarball}: no such file"
        raise EdgeboostError(
            f"{found}: pass --ggl-source ggl-src-*.tar.xz (or set "
            f"{greengrass_lite.SOURCE_ENV}), or use --ipc-server broker"
        )
    missing = greengrass_lite.what_is_missing(tarball)
    if missing is not None:
        raise EdgeboostError(f"--ipc-server greengrass-lite needs {missing}")
    if not greengrass_lite.is_built(tarball):
        say(f"building nucleus lite from {tarball.name} (once: cached in {greengrass_lite.CACHE})")
    try:
        return greengrass_lite.build(tarball)
    except RuntimeError as exc:  # a failed build: its command and the end of its log
        raise EdgeboostError(str(exc)) from None


@contextlib.contextmanager
def _nucleus_lite(
    work: Path, policies: list[ComponentPolicy], build: LiteBuild, say: Say
) -> Iterator[ClientEnv]:
    lite = GreengrassLite(build.daemons, work / "lite", policies, shim=build.shim)
    try:
        lite.start()
        say(f"nucleus lite listening on {lite.socket_path}")
        yield lite.client_env  # asks ggipcd for the component's token
    except RuntimeError as exc:  # nucleus lite did not start, or refused a token
        raise EdgeboostError(str(exc)) from None
    finally:
        lite.stop()
    if lite.leftovers():
        raise EdgeboostError(f"nucleus lite left {', '.join(lite.leftovers())} behind")
    say("nucleus lite stopped: no process, cgroup or mount left")


def _echo(server: subprocess.Popen[bytes], serving: threading.Event) -> None:
    """Pass the server's log through to our stdout; set ``serving`` once it has subscribed."""
    assert server.stdout is not None
    for line in server.stdout:
        text = line.decode(errors="replace")
        sys.stdout.write(text)
        sys.stdout.flush()
        if SERVING in text:
            serving.set()


def _wait_serving(
    server: subprocess.Popen[bytes], serving: threading.Event, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not serving.wait(0.05):
        if server.poll() is not None:
            raise EdgeboostError(f"the inference component exited with status {server.returncode}")
        if time.monotonic() > deadline:
            raise EdgeboostError(f"the inference component was not serving after {timeout:.0f} s")


def _component_env(ipc: dict[str, str], pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ipc)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env

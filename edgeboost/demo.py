"""``edgeboost demo``: the whole Greengrass system on one machine, no AWS account needed.

1. package the bundle as the Greengrass components would be deployed (inference + consumer);
2. start the local broker with the access control of both recipes;
3. start the inference component from its unpacked zip, as Greengrass runs it
   (``python3 -m edgeboost serve``, with the broker's socket and a token in its environment);
4. run the example consumer component: new-style requests, then one old Lambda-style request;
5. stop the server with SIGTERM, as Greengrass does, and check it exits 0.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edgeboost.broker import Broker, load_recipe_policy
from edgeboost.recipes import ComponentOptions, package_bundle
from edgeboost.runtime.exceptions import EdgeboostError
from edgeboost.runtime.targets import host_target

__all__ = ["run_demo"]

NAME, VERSION = "com.example.WineQuality", "1.0.0"


def run_demo(bundle: Path, requests: Path, *, repeat: int = 1, say=print) -> int:  # type: ignore[no-untyped-def]
    options = ComponentOptions(name=NAME, version=VERSION)
    logging.getLogger("edgeboost.broker").setLevel(logging.WARNING)  # the demo shows replies
    with tempfile.TemporaryDirectory(prefix="edgeboost-demo-") as scratch:
        work = Path(scratch)
        package = package_bundle(
            bundle, work / "greengrass-build", options, consumer_requests=requests
        )
        assert package.consumer_recipe is not None and package.consumer_artifacts is not None
        say(f"packaged {package.recipe.name} and {package.consumer_recipe.name}")
        device = work / "device"
        with zipfile.ZipFile(package.zips[host_target()]) as archive:
            archive.extractall(device)

        server_token, consumer_token = secrets.token_hex(8), secrets.token_hex(8)
        components = {
            server_token: load_recipe_policy(package.recipe),
            consumer_token: load_recipe_policy(package.consumer_recipe),
        }
        with Broker(work / "ipc.sock", components) as broker:
            say(f"broker listening on {broker.socket_path}")
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-u",
                    "-m",
                    "edgeboost",
                    "serve",
                    "bundle",
                    "--stats-interval",
                    "3600",
                ],
                cwd=device,
                env=_component_env(broker.client_env(server_token), pythonpath=device),
            )
            try:
                topics = {options.request_topic, options.legacy_request_topic}
                broker.wait_for_subscriptions(
                    lambda subs: topics <= {s.topic_filter for s in subs}, timeout=30
                )
                say("inference component subscribed; running the consumer component")
                consumer = [sys.executable, "-u", str(package.consumer_artifacts / "consumer.py")]
                consumer += ["--requests", str(package.consumer_artifacts / "requests.json")]
                env = _component_env(broker.client_env(consumer_token))
                failures = subprocess.run([*consumer, "--repeat", str(repeat)], env=env).returncode
                say("the same records as an old Lambda-style request on local/inference:")
                failures += subprocess.run([*consumer, "--legacy"], env=env).returncode
            finally:
                server.send_signal(signal.SIGTERM)
                code = server.wait(timeout=60)
            say(f"inference component stopped on SIGTERM with exit code {code}")
    if failures or code != 0:
        raise EdgeboostError(
            f"demo failed: consumer exit codes {failures}, server exit code {code}"
        )
    return 0


def _component_env(ipc: dict[str, str], pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ipc)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env

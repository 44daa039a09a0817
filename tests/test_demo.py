"""`edgeboost demo` end to end, as scripts/demo.sh runs it, over each IPC server: the local broker
(the default) and Greengrass nucleus lite (``--ipc-server greengrass-lite``). Both must print
the same replies, the ones the bundle predicts, and the server must exit 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeboost.broker import greengrass_lite
from edgeboost.cli import main
from edgeboost.runtime import Model

from .conftest import REPO, need
from .greengrass_lite import TARBALL, LiteBuild
from .ipc_client import ipc

REQUESTS = REPO / "models" / "wine-quality" / "requests.json"
STOPPED = "inference component stopped on SIGTERM with exit code 0"


def run_demo(bundle: Path, tmp: Path, *args: str) -> tuple[str, list[Any]]:
    """`python -m edgeboost demo`, its scratch folder under ``tmp``; its output and replies."""
    need(ipc is not None, "awsiotsdk (pip install awsiotsdk)")  # the example consumer's client
    command = [sys.executable, "-m", "edgeboost", "demo", str(bundle), "--requests", str(REQUESTS)]
    env = {**os.environ, "TMPDIR": str(tmp)}
    result = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert STOPPED in output, output
    shown = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return output, [_without_timing(entry["reply"]) for entry in shown]


def _without_timing(reply: Any) -> Any:
    """A reply minus what differs from run to run: its id (random) and latency."""
    if isinstance(reply, dict):
        return {k: v for k, v in reply.items() if k not in ("id", "latency_ms")}
    return reply  # legacy: a bare list of predictions


@pytest.fixture(scope="module")
def broker_replies(shipped_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    return run_demo(shipped_bundle, tmp_path_factory.mktemp("demo-broker"))[1]


def test_demo_over_the_broker_prints_the_bundles_predictions(
    shipped_bundle: Path, broker_replies: list[Any]
) -> None:
    records = json.loads(REQUESTS.read_text())
    expected = Model.load(shipped_bundle).predict(records)
    new_style, legacy = broker_replies[:-1], broker_replies[-1]
    assert [reply["predictions"] for reply in new_style] == [[value] for value in expected]
    assert legacy == expected


def test_demo_over_greengrass_lite_prints_what_the_broker_does(
    lite_build: LiteBuild, shipped_bundle: Path, broker_replies: list[Any], tmp_path: Path
) -> None:
    output, replies = run_demo(
        shipped_bundle, tmp_path, "--ipc-server", "greengrass-lite", "--ggl-source", str(TARBALL)
    )
    assert replies == broker_replies
    assert "nucleus lite stopped: no process, cgroup or mount left" in output
    # Every process the demo started ran in its scratch folder (the daemons and the namespace
    # holder too): none may outlive it.
    left = [pid for pid in _pids() if _cwd(pid).startswith(str(tmp_path))]
    assert left == [], f"processes left behind: {left}"


@pytest.mark.parametrize(
    ("lacking", "said"),
    [
        ("sources", "no nucleus lite sources found: pass --ggl-source ggl-src-*.tar.xz"),
        ("root", "needs root (nucleus lite runs in a private mount namespace)"),
        ("packages", "needs the Debian packages cmake libssl-dev to build nucleus lite "),
    ],
    ids=["no-sources", "not-root", "no-build-packages"],
)
def test_demo_names_what_greengrass_lite_lacks_in_one_line(
    lacking: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    tarball = tmp_path / "ggl-src-0.0.0.tar.xz"
    tarball.write_bytes(b"not built")
    monkeypatch.setattr(os, "geteuid", lambda: 1000 if lacking == "root" else 0)
    monkeypatch.setattr(greengrass_lite, "default_source", lambda: None)
    monkeypatch.setattr(
        greengrass_lite, "missing_build_dependencies", lambda: ["cmake", "libssl-dev"]
    )
    source = [] if lacking == "sources" else ["--ggl-source", str(tarball)]
    argv = ["demo", "no-bundle", "--requests", "no.json", "--ipc-server", "greengrass-lite"]
    assert main([*argv, *source]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("edgeboost demo: error: "), error
    assert said in error
    if lacking == "packages":
        assert "(scripts/bootstrap.sh test)" in error


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # gone, or not ours to read
        return ""

"""``python -m edgeboost.broker``: argument handling, the printed client environment, and a
clean stop on SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from edgeboost.broker.cli import add_arguments, parse_recipe_spec
from edgeboost.runtime.eventstream import FrameDecoder, Header, MessageType, encode_message

TIMEOUT = 10.0


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A folder short enough for a Unix socket path (108 bytes)."""
    if len(bytes(tmp_path)) < 90:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="eb-") as short:
        yield Path(short)


def _recipe(folder: Path, name: str) -> Path:
    path = folder / f"{name}.json"
    access = {"aws.greengrass.ipc.pubsub": {"p": {"operations": ["*"], "resources": ["t/*"]}}}
    path.write_text(
        json.dumps(
            {
                "ComponentName": name,
                "ComponentVersion": "1.0.0",
                "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": access}},
            }
        )
    )
    return path


def test_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--socket", "/tmp/s", "--recipe", "a.json:tok", "--recipe", "b.json"])
    assert args.socket == Path("/tmp/s")
    assert args.recipe == ["a.json:tok", "b.json"]
    assert args.ints_stay_ints is False
    assert args.login_timeout == 10.0
    assert args.update_timeout == 60.0
    assert (
        parser.parse_args(
            ["--socket", "s", "--recipe", "r", "--login-timeout", "0.5"]
        ).login_timeout
        == 0.5
    )


def test_recipe_specs(tmp_path: Path) -> None:
    assert parse_recipe_spec("a.json:tok") == (Path("a.json"), "tok")
    assert parse_recipe_spec("a.json") == (Path("a.json"), None)
    assert parse_recipe_spec("a.json:") == (Path("a.json"), None)
    odd = tmp_path / "odd:name.json"  # an existing file is taken whole, colon and all
    odd.write_text("{}")
    assert parse_recipe_spec(str(odd)) == (odd, None)
    assert parse_recipe_spec(f"{odd}:tok") == (odd, "tok")


def _connect_accepted(path: str, token: str) -> bool:
    """Send a CONNECT with ``token``; True if the broker accepts it."""
    routing = ((":message-type", MessageType.CONNECT), (":message-flags", 0), (":stream-id", 0))
    headers = (Header.string(":version", "0.1.0"), *(Header.int32(n, v) for n, v in routing))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        sock.sendall(encode_message(headers, json.dumps({"authToken": token}).encode()))
        decoder = FrameDecoder()
        while True:
            data = sock.recv(4096)
            assert data, "the broker closed the connection"
            for message in decoder.feed(data):
                kind, flags = (message.find(n) for n in (":message-type", ":message-flags"))
                assert kind is not None and kind.value == MessageType.CONNECT_ACK
                return flags is not None and flags.value == 1


def _pump(stream: IO[str] | None, lines: queue.Queue[str]) -> None:
    for line in stream or ():
        lines.put(line)


@contextmanager
def _broker_logging(
    command: list[str],
) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """`edgeboost broker` as a process, once it listens, with its log lines (stderr) as they
    come; terminated at the end."""
    with subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stderr, lines))
        reader.start()
        try:
            while "listening on" not in lines.get(timeout=TIMEOUT):
                pass
            yield process, lines
        finally:
            process.terminate()
            process.wait(TIMEOUT)
            reader.join(TIMEOUT)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_serves_prints_the_environment_and_stops_cleanly(
    workdir: Path, stop_signal: signal.Signals
) -> None:
    sock = workdir / "ipc.sock"
    command = [
        sys.executable,
        "-m",
        "edgeboost.broker",
        "--socket",
        str(sock),
        "--recipe",
        f"{_recipe(workdir, 'com.example.A')}:tok-a",
        "--recipe",
        str(_recipe(workdir, "com.example.B")),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stdout, lines))
        reader.start()
        try:
            output = [lines.get(timeout=TIMEOUT) for _ in range(5)]
            assert output[0].startswith(f"Greengrass IPC broker listening on {sock}")
            assert output[1] == "com.example.A:\n"
            assert output[2].split() == [
                f"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT={sock}",
                "SVCUID=tok-a",
            ]
            assert output[3] == "com.example.B:\n"
            generated = re.search(r"SVCUID=(\S+)", output[4])
            assert generated is not None and generated[1] != "tok-a"
            assert _connect_accepted(str(sock), "tok-a")
            assert _connect_accepted(str(sock), generated[1])
            assert not _connect_accepted(str(sock), "wrong")
            process.send_signal(stop_signal)
            assert process.wait(TIMEOUT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            reader.join(TIMEOUT)
    assert not sock.exists()


@pytest.mark.parametrize(
    ("recipe_text", "reason"),
    [
        ("{oops", "not valid JSON"),
        ('{"ComponentVersion": "1"}', "no ComponentName"),
        (
            '{"ComponentName": "A", "ComponentConfiguration": {"DefaultConfiguration": [1]}}',
            "DefaultConfiguration must be a mapping",
        ),
    ],
)
def test_bad_recipe_exits_2_with_a_message(workdir: Path, recipe_text: str, reason: str) -> None:
    recipe = workdir / "bad.json"
    recipe.write_text(recipe_text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeboost.broker",
            "--socket",
            str(workdir / "s"),
            "--recipe",
            str(recipe),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert reason in result.stderr and "bad.json" in result.stderr


def test_serves_each_recipes_configuration_and_logs_reported_states(workdir: Path) -> None:
    """What a test running the broker as a process relies on: the configuration comes from the
    recipes, and UpdateState shows in the log."""
    from .raw_ipc import RawIpc

    recipe = _recipe(workdir, "com.example.Model")
    document = json.loads(recipe.read_text())
    defaults = document["ComponentConfiguration"]["DefaultConfiguration"]
    defaults["Bundle"] = {"Version": "1.0.0"}
    recipe.write_text(json.dumps(document))
    sock = workdir / "ipc.sock"
    command = [sys.executable, "-m", "edgeboost.broker", "--socket", str(sock)]
    command += ["--recipe", f"{recipe}:tok-model"]
    with _broker_logging(command) as (_, lines):
        with RawIpc(str(sock)) as client:
            assert client.connect("tok-model").flags == 1
            reply = client.receive_on(
                client.call("aws.greengrass#GetConfiguration", {"keyPath": []})
            )
            assert reply.json() == {"componentName": "com.example.Model", "value": defaults}
            client.receive_on(client.call("aws.greengrass#UpdateState", {"state": "RUNNING"}))
        expected = "component com.example.Model reported state RUNNING"
        while expected not in lines.get(timeout=TIMEOUT):
            pass


def test_sigusr1_runs_a_deployments_update_notification(workdir: Path) -> None:
    """What a test running the broker as a process can do to see a component defer: SIGUSR1,
    then the log says what each component answered."""
    from .raw_ipc import RawIpc

    recipe = _recipe(workdir, "com.example.Server")
    sock = workdir / "ipc.sock"
    command = [sys.executable, "-m", "edgeboost.broker", "--socket", str(sock)]
    command += ["--recipe", f"{recipe}:tok", "--update-timeout", "5"]
    with _broker_logging(command) as (process, lines):
        with RawIpc(str(sock)) as client:
            assert client.connect("tok").flags == 1
            stream = client.call("aws.greengrass#SubscribeToComponentUpdates", {})
            client.receive_on(stream)  # the response
            process.send_signal(signal.SIGUSR1)
            event = client.receive_on(stream, TIMEOUT).json()["preUpdateEvent"]
            request = {"deploymentId": event["deploymentId"], "recheckAfterMs": 0}
            client.receive_on(client.call("aws.greengrass#DeferComponentUpdate", request))
            after = client.receive_on(stream, TIMEOUT).json()
            assert after == {"postUpdateEvent": {"deploymentId": event["deploymentId"]}}
        seen = []
        while "applying after" not in (line := lines.get(timeout=TIMEOUT)):
            seen.append(line)
        assert any("com.example.Server lets it go on" in line for line in seen), seen


def test_the_same_component_twice_is_an_error(workdir: Path) -> None:
    recipe = _recipe(workdir, "com.example.A")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeboost.broker",
            "--socket",
            str(workdir / "s"),
            "--recipe",
            f"{recipe}:one",
            "--recipe",
            f"{recipe}:two",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert "given twice" in result.stderr

"""Serving: request -> reply through the local Greengrass IPC broker with the real client.

Three processes, as on a device: the broker (``python -m edgeboost.broker``, standing in for
the Nucleus, with the access control of the packaged recipes), the inference component
started from its unpacked Greengrass zip (``python -m edgeboost serve bundle``: no numpy, no
compiler) and this process as the consumer, an awsiotsdk V2 client.

- round trip: one request of one named-feature record at a time, publish to reply received;
- sustained: ``concurrency`` client threads each send a request as soon as their previous
  reply arrived (closed loop), for ``seconds``; replies per second and the server's RSS
  (sampled from /proc every ``RSS_SAMPLE_SECONDS``) and CPU time under that load.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .coldstart import proc_status_kib
from .models import WINE_MODEL
from .results import RoundTripMs, ServingResult, TransportResult

__all__ = [
    "OLD_DESIGN_ROUND_TRIP_MS",
    "REPLY_TIMEOUT_S",
    "RSS_SAMPLE_SECONDS",
    "WARM_UP_REQUESTS",
    "RunningComponent",
    "ServingError",
    "measure_serving",
    "percentiles",
    "process_cpu_seconds",
    "running_component",
]

# The Lambda-in-Docker component this project replaces, measured on the same kind of request.
OLD_DESIGN_ROUND_TRIP_MS = (24.0, 25.0)
# Requests before the round trips are timed, and how often the server's RSS is read under load.
WARM_UP_REQUESTS = 50
RSS_SAMPLE_SECONDS = 0.05
# A request with no reply within this many seconds is lost.
REPLY_TIMEOUT_S = 10.0
_NAME, _VERSION = "com.example.Bench", "1.0.0"
_REQUESTS = WINE_MODEL.with_name("requests.json")


class ServingError(RuntimeError):
    """The serving benchmark could not run (a process failed, replies did not come)."""


class _Consumer:
    """An awsiotsdk client that matches replies to requests by id."""

    def __init__(self, socket_path: str, token: str, request_topic: str, response_topic: str):
        import awsiot.greengrasscoreipc as ipc
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
        from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage

        self._message: Callable[[bytes], Any] = lambda payload: PublishMessage(
            binary_message=BinaryMessage(message=payload)
        )
        self.client = GreengrassCoreIPCClientV2(
            client=ipc.connect(ipc_socket=socket_path, authtoken=token)
        )
        self.request_topic = request_topic
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[Any]]] = {}
        self.replies_by_id: Counter[str] = Counter()  # every reply that arrived, to find twins
        _, self._operation = self.client.subscribe_to_topic(
            topic=response_topic, on_stream_event=self._on_reply
        )

    def _on_reply(self, event: Any) -> None:
        reply = json.loads(event.binary_message.message)
        with self._lock:
            self.replies_by_id[str(reply.get("id"))] += 1
            waiter = self._waiting.pop(str(reply.get("id")), None)
        if waiter is not None:
            waiter[1].append(reply)
            waiter[0].set()

    def request(
        self, request_id: str, instances: list[Any], timeout: float = REPLY_TIMEOUT_S
    ) -> Any:
        """Publish one request and wait for its reply; None on time-out."""
        done: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        with self._lock:
            self._waiting[request_id] = done
        payload = json.dumps({"id": request_id, "instances": instances}).encode()
        self.client.publish_to_topic(
            topic=self.request_topic, publish_message=self._message(payload)
        )
        if not done[0].wait(timeout):
            with self._lock:
                self._waiting.pop(request_id, None)
            return None
        return done[1][0]

    def close(self) -> None:
        self._operation.close()
        self.client.close()


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_until_served(consumer: _Consumer, record: dict[str, Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        try:
            if consumer.request(f"probe-{attempt}", [record], timeout=0.5) is not None:
                return
        except Exception:  # the broker may refuse until the server has subscribed
            time.sleep(0.1)
    raise ServingError(f"the inference component did not answer within {timeout:.0f} s")


def _start(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[Any]:
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=output)


def _stop(process: subprocess.Popen[Any]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return -9
    return process.returncode


# A device's interpreter: the distribution's python3 with its python3-cffi, when this machine
# has them (Debian: apt-get install python3-cffi).
_DISTRIBUTION_PYTHON3 = "/usr/bin/python3"


@dataclass(frozen=True)
class DevicePython:
    """How the server's interpreter is started, and what it is, for the report."""

    command: tuple[str, ...]
    installer: str  # the python3 the recipe's Install runs
    site_packages: tuple[str, ...]  # put on PYTHONPATH after the runtime
    description: str


def device_python(transport: str, work: Path) -> DevicePython:
    """The distribution's python3 with python3-cffi where there is one, as on a device;
    otherwise this Python with -S (no site-packages start-up: its .pth files import more than
    a device ever does). Either way only what a device would have is importable: this Python's
    copy of awsiotsdk for that transport (as `pip install --target` leaves it), and its cffi
    backend when the distribution's is missing."""
    probe = [_DISTRIBUTION_PYTHON3, "-c", "import cffi, _cffi_backend, sys; print(sys.version)"]
    found = shutil.which(_DISTRIBUTION_PYTHON3) and subprocess.run(probe, capture_output=True)
    awsiotsdk = ("awsiot", "awscrt", "_awscrt") if transport == "awsiotsdk" else ()
    if found and found.returncode == 0:
        version = found.stdout.decode().split()[0]
        return DevicePython(
            (_DISTRIBUTION_PYTHON3,),
            _DISTRIBUTION_PYTHON3,
            _only(awsiotsdk, work / "site-packages"),
            f"the distribution's python3 {version} with its python3-cffi",
        )
    return DevicePython(
        (sys.executable, "-S"),
        sys.executable,
        _only(("_cffi_backend", *awsiotsdk), work / "site-packages"),
        f"this machine's Python {sys.version.split()[0]} with -S (no distribution python3 "
        "with python3-cffi here: apt-get install python3-cffi)",
    )


def _only(modules: tuple[str, ...], folder: Path) -> tuple[str, ...]:
    """A folder holding nothing but links to these top-level modules of this Python, for
    PYTHONPATH; () when there are none."""
    if not modules:
        return ()
    import importlib.util

    folder.mkdir(parents=True, exist_ok=True)
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ServingError(f"{name} is not installed here (pip install 'edgeboost[dev]')")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (folder / source.name).symlink_to(source)
    return (str(folder),)


def _package(bundle: Path, work: Path) -> tuple[Path, Path, Path]:
    """Package the bundle as `edgeboost package` does; unzip this platform's runtime and model
    zips into one folder (the model in ``bundle/``)."""
    from edgeboost.recipes import ComponentOptions, package_bundle, unpack_on_this_machine
    from edgeboost.runtime.targets import host_target

    package = package_bundle(
        bundle,
        work / "greengrass-build",
        ComponentOptions(name=_NAME, version=_VERSION),
        consumer_requests=_REQUESTS,
    )
    assert package.consumer_recipe is not None and package.runtime is not None
    device = work / "device"
    unpack_on_this_machine(package, device, host_target())
    return package.runtime.recipe, package.consumer_recipe, device


@dataclass
class RunningComponent:
    """The inference component as on a device, its IPC server and a consumer."""

    consumer: _Consumer
    server: subprocess.Popen[Any]
    record: dict[str, Any]
    python: str  # what the server runs on (DevicePython.description)
    exit_codes: dict[str, int] = field(default_factory=dict)  # filled when they stop


@contextmanager
def running_component(
    bundle: Path, *, queue_size: int = 256, transport: str = "builtin"
) -> Iterator[RunningComponent]:
    """Broker, inference component (from its unpacked zip) and consumer; SIGTERM at the end,
    each process's exit status in ``exit_codes``."""
    from edgeboost.broker import SOCKET_ENV, TOKEN_ENV
    from edgeboost.recipes import install_on_this_machine
    from edgeboost.runtime.server import ServerConfig
    from edgeboost.runtime.targets import host_target

    config = ServerConfig()
    record = json.loads(_REQUESTS.read_text())[0]
    # Unix socket paths are short: a folder right under /tmp.
    work = Path(tempfile.mkdtemp(prefix="eb-serve-"))
    processes: list[subprocess.Popen[Any]] = []
    consumer: _Consumer | None = None
    try:
        recipe, consumer_recipe, device = _package(bundle, work)
        python = device_python(transport, work)
        # The recipe's Install, which compiles the runtime's bytecode into the work folder.
        installed = install_on_this_machine(
            recipe, device, work, host_target(), python3=python.installer
        )
        if installed.returncode != 0:
            raise ServingError(f"the recipe's Install failed: {installed.stderr}")
        pycache_env = {
            "PYTHONPATH": os.pathsep.join([str(device), *python.site_packages]),
            # As the recipe's Run: the bytecode Install compiled (the artifacts are read-only).
            "PYTHONPYCACHEPREFIX": str(work / "pycache"),
        }
        server_token, consumer_token = secrets.token_hex(8), secrets.token_hex(8)
        socket_path = work / "ipc.sock"
        broker = _start(
            [
                sys.executable,
                "-m",
                "edgeboost.broker",
                "--socket",
                str(socket_path),
                "--recipe",
                f"{recipe}:{server_token}",
                "--recipe",
                f"{consumer_recipe}:{consumer_token}",
            ],
            dict(os.environ),
            work,
            work / "broker.log",
        )
        processes.append(broker)
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            if broker.poll() is not None or time.monotonic() > deadline:
                raise ServingError(f"the broker did not start: {(work / 'broker.log').read_text()}")
            time.sleep(0.05)
        # What a Nucleus gives a component, not this shell's environment.
        server_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            SOCKET_ENV: str(socket_path),
            TOKEN_ENV: server_token,
            **pycache_env,
        }
        server_command = [
            *(*python.command, "-m", "edgeboost", "serve", "bundle"),
            *("--stats-interval", "3600", "--queue-size", str(queue_size)),
            *("--transport", transport),
        ]
        consumer = _Consumer(
            str(socket_path), consumer_token, config.request_topic, config.response_topic
        )
        # awsiotsdk is not in the zip, so Install compiled none of it: a first run does, as a
        # device's first start would. The figures are a later start's.
        for first_run in ([True] if transport == "awsiotsdk" else []) + [False]:
            server = _start(server_command, server_env, device, work / "server.log")
            processes.append(server)
            _wait_until_served(consumer, record, timeout=60)
            if first_run:
                _stop(server)
                processes.remove(server)
        running = RunningComponent(consumer, server, record, python.description)
        yield running
        running.exit_codes["server"] = _stop(server)
        consumer.close()
        consumer = None
        running.exit_codes["broker"] = _stop(broker)
    finally:
        if consumer is not None:
            consumer.close()
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(work, ignore_errors=True)


TRANSPORTS = ("builtin", "awsiotsdk")


def measure_serving(
    bundle: Path,
    *,
    round_trips: int,
    seconds: float,
    concurrency: int,
    say: Callable[[str], None] = print,
) -> ServingResult:
    """Each transport in turn, the default (built-in) one first."""
    by_transport = {}
    for transport in TRANSPORTS:
        say(f"  transport {transport}")
        by_transport[transport] = _measure_one(
            bundle,
            transport=transport,
            round_trips=round_trips,
            seconds=seconds,
            concurrency=concurrency,
            say=say,
        )
    return ServingResult(
        default_transport=TRANSPORTS[0],
        transports=by_transport,
        old_design_round_trip_ms=OLD_DESIGN_ROUND_TRIP_MS,
    )


def _measure_one(
    bundle: Path,
    *,
    transport: str,
    round_trips: int,
    seconds: float,
    concurrency: int,
    say: Callable[[str], None],
) -> TransportResult:
    with running_component(bundle, transport=transport) as running:
        consumer, server, record = running.consumer, running.server, running.record
        rss_idle = proc_status_kib("VmRSS", server.pid)
        for i in range(min(WARM_UP_REQUESTS, round_trips)):
            consumer.request(f"warm-{i}", [record])
        latencies, lost = [], 0
        for i in range(round_trips):
            started = time.perf_counter_ns()
            reply = consumer.request(f"rt-{i}", [record])
            elapsed = time.perf_counter_ns() - started
            if reply is None or "predictions" not in reply:
                lost += 1
                continue
            latencies.append(elapsed / 1e6)
        say(f"  round trip: {len(latencies)} requests, median {np.median(latencies):.2f} ms")

        load = _sustained(consumer, record, server.pid, seconds, concurrency)
        say(f"  sustained: {load.requests_per_s:.0f} req/s with {concurrency} in flight")
        peak = proc_status_kib("VmHWM", server.pid)
        rss_after = proc_status_kib("VmRSS", server.pid)
        threads = len(os.listdir(f"/proc/{server.pid}/task"))
    return TransportResult(
        model=json.loads((bundle / "manifest.json").read_text())["model"]["name"],
        transport=transport,
        request=f"one named-feature record ({_REQUESTS.parent.name}/{_REQUESTS.name}[0])",
        round_trip_ms=percentiles(latencies),
        round_trips=len(latencies),
        round_trips_lost=lost,
        concurrency=concurrency,
        sustained_seconds=load.seconds,
        requests_per_s=load.requests_per_s,
        sustained_requests=load.answered,
        sustained_lost=load.lost,
        server_cpu_ms_per_request=1e3 * load.server_cpu_s / max(load.answered, 1),
        requests_per_server_cpu_s=(
            load.answered / load.server_cpu_s if load.server_cpu_s > 0 else None
        ),
        server_rss_under_load_median_mib=(
            float(np.median(load.rss_kib)) / 1024 if load.rss_kib else None
        ),
        server_rss_under_load_max_mib=max(load.rss_kib) / 1024 if load.rss_kib else None,
        server_rss_idle_mib=(rss_idle or 0) / 1024,
        server_rss_after_mib=(rss_after or 0) / 1024,
        server_peak_rss_mib=(peak or 0) / 1024,
        server_threads=threads,
        exit_codes=dict(running.exit_codes),
        server_python=running.python,
    )


@dataclass(frozen=True, slots=True)
class _Load:
    seconds: float
    answered: int
    lost: int
    server_cpu_s: float
    rss_kib: list[int]

    @property
    def requests_per_s(self) -> float:
        return self.answered / self.seconds


def _sustained(
    consumer: _Consumer, record: dict[str, Any], server_pid: int, seconds: float, concurrency: int
) -> _Load:
    stop = threading.Event()
    answered = [0] * concurrency
    lost = [0] * concurrency
    rss: list[int] = []

    def client(slot: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            reply = consumer.request(f"load-{slot}-{n}", [record])
            if reply is not None and "predictions" in reply:
                answered[slot] += 1
            else:
                lost[slot] += 1

    def sample() -> None:
        while not stop.wait(RSS_SAMPLE_SECONDS):
            value = proc_status_kib("VmRSS", server_pid)
            if value is not None:
                rss.append(value)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    threads.append(threading.Thread(target=sample, daemon=True))
    cpu_before = process_cpu_seconds(server_pid)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    elapsed = time.perf_counter() - started
    cpu = process_cpu_seconds(server_pid) - cpu_before
    return _Load(
        seconds=elapsed, answered=sum(answered), lost=sum(lost), server_cpu_s=cpu, rss_kib=rss
    )


def percentiles(values: list[float]) -> RoundTripMs:
    if not values:
        return RoundTripMs(p50=None, p90=None, p99=None, min=None, max=None)
    data = np.asarray(values)
    return RoundTripMs(
        p50=float(np.percentile(data, 50)),
        p90=float(np.percentile(data, 90)),
        p99=float(np.percentile(data, 99)),
        min=float(data.min()),
        max=float(data.max()),
    )

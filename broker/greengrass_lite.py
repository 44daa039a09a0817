"""Greengrass nucleus lite (AWS's C Nucleus) as a local IPC server, for tests and ``edgeboost
demo --ipc-server greengrass-lite``. Like the rest of broker/, a development tool: never shipped
to devices.

The three daemons local pub/sub needs (ggconfigd, ggpubsubd, ggipcd) are built from AWS's
source tarball (ggl-src-*.tar.xz), offline and once per tarball content (cached under
~/.cache/edgeboost/greengrass-lite/<sha256>/). They run the way the Nucleus runs them, minus
systemd: in a private mount namespace whose /run is a tmpfs (their core bus is the hard-coded
/run/greengrass), with a fresh working folder and a config that declares each component and its
accessControl. Needs root and util-linux; the build needs BUILD_TOOLS and BUILD_LIBRARIES.

Tokens go through cgroups where they are writable, else (or with EDGEBOOST_GGL_TOKENS=shim)
through an LD_PRELOAD shim in ggipcd (ggl_unit_shim.c); the token client is ggl_token.py.

    lite_build = build(tarball)  # what_is_missing(tarball) first says what this machine lacks
    with GreengrassLite(lite_build.daemons, root, policies, shim=lite_build.shim) as lite:
        env = lite.client_env("com.example.Component")  # socket path and SVCUID

A component's configuration (what GetConfiguration reads) is its accessControl, plus whatever
``configurations`` gives for it (a recipe's DefaultConfiguration: ``load_recipe(path)``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeboost.broker.policy import PUBSUB_DESTINATION, ComponentPolicy
from edgeboost.broker.server import SOCKET_ENV, TOKEN_ENV
from edgeboost.caches import cache_dir

SOURCE_ENV = "EDGEBOOST_GGL_SOURCE"  # the tarball, when not passed
CACHE = cache_dir("greengrass-lite")
DAEMONS = ("ggconfigd", "ggpubsubd", "ggipcd")
SHIM_SOURCE = Path(__file__).with_name("ggl_unit_shim.c")
TOKEN_CLIENT = "edgeboost.broker.ggl_token"
# What the build needs, and the Debian package that has it: tools, then pkg-config libraries.
BUILD_TOOLS = {
    **{"cmake": "cmake", "make": "build-essential", "cc": "build-essential"},
    **{"pkg-config": "pkg-config", "tar": "tar", "xz": "xz-utils"},
}
BUILD_LIBRARIES = {
    **{"openssl": "libssl-dev", "libcurl": "libcurl4-openssl-dev", "sqlite3": "libsqlite3-dev"},
    **{"yaml-0.1": "libyaml-dev", "libsystemd": "libsystemd-dev", "uuid": "uuid-dev"},
    **{"libevent": "libevent-dev", "liburiparser": "liburiparser-dev", "libzip": "libzip-dev"},
}
RUN_TOOLS = ("unshare", "nsenter", "setpriv", "mount")
# What the daemons see: nothing of the caller's environment leaks in.
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- building -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiteBuild:
    daemons: Path  # its bin/ holds ggconfigd, ggpubsubd and ggipcd
    shim: Path | None  # the LD_PRELOAD token shim, where cgroups are not writable


def default_source() -> Path | None:
    """$EDGEBOOST_GGL_SOURCE, else ../shared/greengrass-lite/ggl-src-*.tar.xz beside the
    repository checkout this package runs from (the newest by name), else None."""
    if os.environ.get(SOURCE_ENV):
        return Path(os.environ[SOURCE_ENV])
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "pyproject.toml").is_file():  # an installed package, not a checkout
        return None
    found = sorted((checkout.parent / "shared" / "greengrass-lite").glob("ggl-src-*.tar.xz"))
    return found[-1] if found else None


def what_is_missing(tarball: Path, cache: Path = CACHE) -> str | None:
    """What this machine lacks to build (unless cached) and run nucleus lite, named so that
    "needs ..." or "... is missing" reads well; None when nothing is."""
    if not tarball.is_file():
        return f"{tarball} (Greengrass nucleus lite sources)"
    if os.geteuid() != 0:
        return "root (nucleus lite runs in a private mount namespace)"
    tools = [tool for tool in RUN_TOOLS if shutil.which(tool) is None]
    if tools:
        return f"{', '.join(tools)} (util-linux)"
    if not is_built(tarball, cache):
        packages = missing_build_dependencies()
        if packages:
            what = f"the Debian packages {' '.join(packages)} to build nucleus lite"
            return f"{what} (scripts/bootstrap.sh test)"
    if needs_shim() and shutil.which("cc") is None:
        return "a C compiler (cc) for the token shim"
    return None


def build(tarball: Path, cache: Path = CACHE) -> LiteBuild:
    """The daemons (build_daemons), and the token shim where it is needed (build_shim)."""
    daemons = build_daemons(tarball, cache)
    return LiteBuild(daemons, build_shim(daemons) if needs_shim() else None)


def is_built(tarball: Path, cache: Path = CACHE) -> bool:
    return (cache / sha256_of(tarball)).is_dir()


def needs_shim() -> bool:
    return os.environ.get("EDGEBOOST_GGL_TOKENS") == "shim" or writable_cgroup_root() is None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing_build_dependencies() -> list[str]:
    """The Debian packages the build needs and this machine lacks."""
    missing = [package for tool, package in BUILD_TOOLS.items() if shutil.which(tool) is None]
    if shutil.which("pkg-config") is not None:
        for library, package in BUILD_LIBRARIES.items():
            if subprocess.run(["pkg-config", "--exists", library], check=False).returncode:
                missing.append(package)
    return list(dict.fromkeys(missing))


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc.strerror})"


def _run(command: list[str], log: Path) -> None:
    with log.open("ab") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed; end of {log}:\n{_tail(log)}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes; the kernel drops it when its holder dies."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_daemons(tarball: Path, cache: Path = CACHE, jobs: int = 2) -> Path:
    """The folder whose bin/ holds the daemons built from ``tarball``, built only if the cache
    has no folder named by the tarball's sha256. The build runs in a temporary folder that is
    renamed into place when complete, so a killed build never leaves a half-built cache."""
    final = cache / sha256_of(tarball)
    if final.is_dir():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if final.is_dir():  # another process built it while we waited for the lock
            return final
        for stale in cache.glob(".build-*"):  # left by killed builds: only lock holders build
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            _build(tarball, work, jobs)
            (work / "out").rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def _build(tarball: Path, work: Path, jobs: int) -> None:
    src, build, out = work / "src", work / "build", work / "out"
    src.mkdir()
    (out / "bin").mkdir(parents=True)
    log = out / "build.log"
    _run(["tar", "-xJf", str(tarball), "-C", str(src)], log)
    # Offline: FetchContent takes every dependency from the tarball's deps/.
    deps = [
        f"-DFETCHCONTENT_SOURCE_DIR_{name.upper()}={src / 'deps' / name}"
        for name in ("core_mqtt", "aws_sigv4", "gg_sdk", "unity")
    ]
    configure = ["cmake", "-S", str(src / "src"), "-B", str(build)]
    configure += ["-DCMAKE_BUILD_TYPE=MinSizeRel", "-DGGL_SYSTEMD_SERVICE_BUILD=OFF"]
    _run([*configure, "-DFETCHCONTENT_FULLY_DISCONNECTED=ON", *deps], log)
    targets = [f"{daemon}-bin" for daemon in DAEMONS]
    _run(["cmake", "--build", str(build), f"-j{jobs}", "--target", *targets], log)
    for daemon in DAEMONS:
        shutil.copy2(build / "bin" / daemon, out / "bin" / daemon)


def build_shim(folder: Path) -> Path:
    """Compile ggl_unit_shim.c into ``folder``, named by the source's hash (an edited shim is
    compiled anew); written under a temporary name and renamed, so readers never see half."""
    digest = hashlib.sha256(SHIM_SOURCE.read_bytes()).hexdigest()[:16]
    shim = folder / f"unit-shim-{digest}.so"
    if not shim.exists():
        partial = folder / f".{shim.name}.{os.getpid()}"
        command = ["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror"]
        _run([*command, "-o", str(partial), str(SHIM_SOURCE)], folder / "shim.log")
        partial.replace(shim)
    return shim


def writable_cgroup_root() -> Path | None:
    """The cgroup v2 hierarchy in which we may create ``ggl.<name>.service``, or None. On hybrid
    hosts v2 is mounted at /sys/fs/cgroup/unified, where libsystemd then looks for units."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if not (root / "cgroup.controllers").exists():
            continue
        probe = root / f"ggl.edgeboost-probe-{os.getpid()}.service"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError:
            continue
        return root
    return None


# --- running --------------------------------------------------------------------------------
def access_control(policy: ComponentPolicy) -> dict[str, Any]:
    """A policy back in the recipe's accessControl shape, which Lite's config takes as is."""
    block = {
        rule.policy_id: {"operations": sorted(rule.operations), "resources": list(rule.resources)}
        for rule in policy.pubsub
    }
    return {PUBSUB_DESTINATION: block}


def lite_configuration(
    policy: ComponentPolicy, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What Lite's config declares as a component's configuration: ``defaults`` with the policy
    as its accessControl. The policy wins over an accessControl in ``defaults``: it is what
    Lite authorizes with, and what callers that pass only policies have always relied on."""
    return {**(defaults or {}), "accessControl": access_control(policy)}


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reuses its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _accepts(socket_path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(socket_path)
        except OSError:  # not there yet, or a stale file from an earlier run
            return False
    return True


def _remove_cgroup(cgroup: Path, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY until the kernel has let the exited process go
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class GreengrassLite:
    """ggconfigd, ggpubsubd and ggipcd serving ``components`` (name and accessControl each), with
    ``configurations`` (component name -> default configuration) where given.

    ``root`` is the working folder: config.yaml, config.db, logs/ and the IPC socket
    gg-ipc.socket. Tokens are issued through cgroups, or through the LD_PRELOAD ``shim`` when one
    is given. Every process dies with the thread that started it (PR_SET_PDEATHSIG), so a
    killed caller leaves nothing running; call start(), restart_ipc() etc. from the main thread.
    """

    def __init__(
        self,
        daemons: Path,
        root: Path,
        components: Iterable[ComponentPolicy],
        *,
        configurations: Mapping[str, Mapping[str, Any]] | None = None,
        shim: Path | None = None,
    ) -> None:
        self.root = root.resolve()
        self.socket_path = str(self.root / "gg-ipc.socket")
        if len(self.socket_path.encode()) >= 108:  # sockaddr_un.sun_path
            raise ValueError(f"socket path too long for a Unix socket: {self.socket_path}")
        self.components = {policy.name: policy for policy in components}
        self.configurations = {name: dict(value) for name, value in (configurations or {}).items()}
        undeclared = sorted(set(self.configurations) - set(self.components))
        if undeclared:
            raise ValueError(f"configuration given for undeclared components: {undeclared}")
        self._bin = daemons / "bin"
        self._shim = shim
        self._cgroup_root = None if shim else writable_cgroup_root()
        if shim is None and self._cgroup_root is None:
            raise RuntimeError("no writable cgroup v2 hierarchy: pass the LD_PRELOAD shim")
        self._holder: subprocess.Popen[bytes] | None = None
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}
        self._started: list[tuple[int, str | None]] = []  # every pid we spawned, for leftovers()
        self._slice = (self._cgroup_root or Path()) / f"edgeboost-{uuid.uuid4().hex[:12]}.slice"
        self._tokens: dict[str, str] = {}

    # lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> GreengrassLite:
        if self._holder is not None:
            raise RuntimeError("already running")
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        try:
            # The namespace lives as long as this sleeping process; every daemon joins it.
            script = "mount -t tmpfs -o mode=755 ggl-run /run && mkdir /run/greengrass"
            script += " && echo ready && exec sleep infinity"
            with (self.root / "logs" / "namespace.log").open("ab") as log:
                self._holder = self._spawn(
                    ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
            assert self._holder.stdout is not None
            if self._holder.stdout.readline() != b"ready\n":  # sh exited: EOF
                raise RuntimeError(f"no mount namespace: {_tail(self.root / 'logs/namespace.log')}")
            self._holder.stdout.close()
            self._start_daemon("ggconfigd", "-c", str(config), "-C", str(self.root / "config.d"))
            self._wait_for("ggconfigd", self._bus("gg_config"), timeout)
            self._start_daemon("ggpubsubd")
            self._wait_for("ggpubsubd", self._bus("gg_pubsub"), timeout)
            self.start_ipc(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_ipc(self, timeout: float = 10.0) -> None:
        """Start ggipcd (again) on the same socket path."""
        env = {"LD_PRELOAD": str(self._shim)} if self._shim else {}
        self._start_daemon("ggipcd", "--socket", self.socket_path, env=env)
        self._wait_for("ggipcd", self.socket_path, timeout)

    def stop_ipc(self) -> None:
        """Stop ggipcd. It keeps tokens in memory only: the next one issues new ones."""
        self._stop_daemon("ggipcd")
        self._tokens.clear()

    def restart_ipc(self, timeout: float = 10.0) -> None:
        self.stop_ipc()
        self.start_ipc(timeout)

    def stop(self) -> None:
        """Stop every daemon, then the namespace (its tmpfs goes with it). Idempotent."""
        for name in reversed(DAEMONS):
            self._stop_daemon(name)
        self._tokens.clear()
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait()
            self._holder = None

    def __enter__(self) -> GreengrassLite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def pids(self) -> dict[str, int]:
        """The daemons' pids (and the namespace holder's), while running."""
        running = {name: process.pid for name, process in self._daemons.items()}
        if self._holder is not None:
            running["namespace"] = self._holder.pid
        return running

    def leftovers(self) -> list[str]:
        """Whatever should be gone after stop() but is not: a process we started that still
        runs (the namespace, and so the tmpfs on /run, dies with the last of them) or a cgroup
        we created."""
        alive = [pid for pid, start in self._started if start and _start_time(pid) == start]
        found = [f"pid {pid}" for pid in alive]
        if self._cgroup_root and self._slice.exists():
            found.append(f"cgroup {self._slice}")
        return found

    # tokens ------------------------------------------------------------------------------
    def token(self, component: str) -> str:
        """The SVCUID of a component declared in the config, asked from ggipcd on first use."""
        if component not in self.components:
            raise KeyError(f"{component} is not declared in the nucleus lite config")
        if component not in self._tokens:
            self._tokens[component] = self.request_token(component)
        return self._tokens[component]

    def request_token(self, component: str, *, claim: str | None = None) -> str:
        """Connect as a process of ``component``'s unit and claim to be ``claim`` (default: the
        same component); ggipcd answers with the token, or closes the connection when the two
        differ. Raises RuntimeError when refused."""
        command = [sys.executable, "-m", TOKEN_CLIENT, self.socket_path, claim or component]
        env = dict(os.environ)
        if self._cgroup_root is None:
            env["EDGEBOOST_GGL_COMPONENT"] = component  # what the shim in ggipcd reads
            return self._run_token_client(command, env)
        # Inside a slice of our own, so that parallel sessions never share a cgroup: libsystemd
        # skips slices when it names the unit (/x.slice/ggl.A.service is unit ggl.A.service).
        cgroup = self._slice / f"ggl.{component}.service"
        cgroup.mkdir(parents=True)
        try:
            return self._run_token_client([*command, str(cgroup)], env)
        finally:
            _remove_cgroup(cgroup)
            _remove_cgroup(self._slice)

    def client_env(self, component_or_token: str) -> dict[str, str]:
        """What a component process needs in its environment to connect: socket and SVCUID."""
        if component_or_token in self._tokens.values():
            token = component_or_token
        else:
            token = self.token(component_or_token)
        return {SOCKET_ENV: self.socket_path, TOKEN_ENV: token}

    # internals ---------------------------------------------------------------------------
    def _write_config(self) -> Path:
        services = {
            name: {
                "version": "1.0.0",
                "configuration": lite_configuration(policy, self.configurations.get(name)),
            }
            for name, policy in self.components.items()
        }
        config = {"system": {"rootPath": str(self.root)}, "services": services}
        path = self.root / "config.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML: no PyYAML needed
        return path

    def _spawn(self, command: list[str], **options: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", *command],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            **options,
        )
        self._started.append((process.pid, _start_time(process.pid)))
        return process

    def _start_daemon(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        assert self._holder is not None
        join = ["nsenter", f"--target={self._holder.pid}", "--mount", f"--wd={self.root}", "--"]
        with (self.root / "logs" / f"{name}.log").open("ab") as log:
            self._daemons[name] = self._spawn(
                [*join, str(self._bin / name), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": DAEMON_PATH, **(env or {})},
            )

    def _stop_daemon(self, name: str, timeout: float = 5.0) -> None:
        process = self._daemons.pop(name, None)
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _bus(self, name: str) -> str:
        """A core-bus socket, seen from outside the namespace."""
        assert self._holder is not None
        return f"/proc/{self._holder.pid}/root/run/greengrass/{name}"

    def _wait_for(self, daemon: str, socket_path: str, timeout: float) -> None:
        """Until ``daemon`` accepts connections on ``socket_path``."""
        deadline = time.monotonic() + timeout
        while not _accepts(socket_path):
            if self._daemons[daemon].poll() is not None or time.monotonic() > deadline:
                log = self.root / "logs" / f"{daemon}.log"
                raise RuntimeError(f"{daemon} did not come up; end of {log}:\n{_tail(log)}")
            time.sleep(0.01)

    def _run_token_client(self, command: list[str], env: dict[str, str]) -> str:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        if result.returncode:
            log = self.root / "logs" / "ggipcd.log"
            raise RuntimeError(f"{result.stderr.strip()}; end of {log}:\n{_tail(log, 5)}")
        return result.stdout.strip()

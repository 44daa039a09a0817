"""Run target libraries, and a real target Python, on this machine under qemu-user.

Host side only (stdlib + numpy), used by the parity tests and by CI:

- ``qemu_prefix(triple)``: the command prefix that runs a target's program here (empty for
  the host's own target). binfmt_misc is not assumed: qemu is always invoked explicitly.
- ``build_driver`` / ``run_library``: native/parity_driver.c, built per target and cached by
  source hash, runs a model library on float32 rows and returns margins and values.
- ``prepare_python_root`` / ``run_python``: a Debian bookworm userland with python3.11 and
  python3-cffi, unpacked from .debs with ``dpkg-deb -x`` (no debootstrap, no chroot), and
  that Python run under qemu with a clean environment.

Warm the cache from CI with:
``python -m edgeboost.compile.emulation prepare --target all --cache DIR``
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from edgeboost.runtime.targets import TARGETS, host_target

from .errors import ToolchainError
from .toolchain import TOOLCHAINS, compiler_version

__all__ = [
    "EMULATORS",
    "PYTHON",
    "ROOT_PACKAGES",
    "DebPackage",
    "EmulationError",
    "Emulator",
    "MissingToolError",
    "build_driver",
    "default_cache_dir",
    "main",
    "needs_emulation",
    "prepare_python_root",
    "qemu_prefix",
    "read_outputs",
    "run_library",
    "run_python",
    "write_rows",
]

_log = logging.getLogger(__name__)

QEMU_PACKAGE = "qemu-user-static"
CACHE_ENV_VAR = "EDGEBOOST_EMULATION_CACHE"
# The interpreter inside the userland; bookworm's python3 is 3.11 (the devices' Python).
PYTHON = "usr/bin/python3.11"
# What the userland is resolved from; apt adds every dependency (libc6, libssl3 for hashlib,
# libffi8, libexpat1, ...). Listed explicitly rather than trusting python3-cffi's Depends.
ROOT_PACKAGES = (
    "python3",
    "python3.11",
    "python3-cffi",
    "python3-cffi-backend",
    "python3-pycparser",
    "python3-ply",
    "libffi8",
    "libc6",
)
# Imported by the smoke test of a fresh userland: what the runtime needs to start.
_SMOKE_IMPORTS = ("cffi", "_cffi_backend", "json", "hashlib", "logging", "threading", "array")
_DRIVER_FLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra")
_ROWS_MAGIC, _OUT_MAGIC, _FORMAT_VERSION = b"EBPR", b"EBPO", 1
# magic, version, n_rows, n_cols (or n_out), reserved: see native/parity_driver.c.
_HEADER = struct.Struct("<4sIqii")


class EmulationError(ToolchainError):
    """Building or running a target's program on this machine failed."""


class MissingToolError(EmulationError):
    """A tool is missing (qemu, cross compiler, target libc, apt); says what to install."""


@dataclass(frozen=True, slots=True)
class Emulator:
    """How to run one target's programs on a machine of another architecture."""

    triple: str
    qemu: str
    debian_arch: str

    @property
    def sysroot(self) -> Path:
        """The cross toolchain's libc: headers to build against, loader and libs to run with."""
        return Path(f"/usr/{TOOLCHAINS[self.triple].gnu_triple}")

    @property
    def sysroot_package(self) -> str:
        return TOOLCHAINS[self.triple].libc_package


EMULATORS: dict[str, Emulator] = {
    e.triple: e
    for e in (
        Emulator("x86_64-linux-gnu", "qemu-x86_64-static", "amd64"),
        Emulator("aarch64-linux-gnu", "qemu-aarch64-static", "arm64"),
        Emulator("armv7-linux-gnueabihf", "qemu-arm-static", "armhf"),
    )
}
assert EMULATORS.keys() == TARGETS.keys(), "every runtime target needs an emulator entry"


@dataclass(frozen=True, slots=True)
class DebPackage:
    name: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        # apt-get download escapes the epoch colon this way.
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


# ---------------------------------------------------------------------------------------------
# qemu and the cross toolchains


def needs_emulation(triple: str) -> bool:
    """True unless ``triple`` is the target of this very Python process (EDGEBOOST_TARGET,
    if set, decides that, as for the runtime)."""
    _emulator(triple)
    try:
        return host_target() != triple
    except LookupError:
        return True


def qemu_prefix(triple: str, *, sysroot: str | Path | None = None) -> list[str]:
    """Command prefix that runs a ``triple`` program here: [] natively, else qemu + -L ROOT.

    ``sysroot`` defaults to the cross toolchain's libc (/usr/<gnu-triple>); pass a userland
    from ``prepare_python_root`` to run its programs instead.
    """
    emulator = _emulator(triple)
    if not needs_emulation(triple):
        return []
    qemu = shutil.which(emulator.qemu)
    if qemu is None:
        raise MissingToolError(
            f"{emulator.qemu} is not on PATH (needed to run {triple} code here); "
            f"install it with: apt-get install {QEMU_PACKAGE}"
        )
    root = Path(sysroot) if sysroot is not None else emulator.sysroot
    if sysroot is None and not (root / "lib" / "libc.so.6").exists():
        raise MissingToolError(
            f"no {triple} C library in {root}; install it with: "
            f"apt-get install {emulator.sysroot_package}"
        )
    return [qemu, "-L", str(root)]


def _emulator(triple: str) -> Emulator:
    try:
        return EMULATORS[triple]
    except KeyError:
        raise EmulationError(f"unknown target {triple!r}; known: {', '.join(EMULATORS)}") from None


def _cross_compiler(triple: str) -> str:
    """The target's C compiler, with the libc headers it needs checked up front."""
    try:
        compiler = TOOLCHAINS[triple].resolve()
    except ToolchainError as exc:
        raise MissingToolError(str(exc)) from exc
    emulator = _emulator(triple)
    # Without the cross libc a cross gcc silently falls back to the host's /usr/include and
    # fails deep inside stdio.h; say what is missing instead.
    if needs_emulation(triple) and not (emulator.sysroot / "include" / "stdio.h").exists():
        raise MissingToolError(
            f"{compiler} has no {triple} C library headers in {emulator.sysroot}/include; "
            f"install them with: apt-get install {emulator.sysroot_package}"
        )
    return compiler


# ---------------------------------------------------------------------------------------------
# The parity driver


def default_cache_dir() -> Path:
    """$EDGEBOOST_EMULATION_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/edgeboost/emulation."""
    explicit = os.environ.get(CACHE_ENV_VAR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeboost" / "emulation"


def build_driver(triple: str, cache_dir: str | Path | None = None) -> Path:
    """Build native/parity_driver.c for ``triple``, or reuse the cached build of this source."""
    native = Path(str(resources.files("edgeboost.native")))
    source = native / "parity_driver.c"
    compiler = _cross_compiler(triple)
    flags = (*_DRIVER_FLAGS, *TOOLCHAINS[triple].flags)
    key = hashlib.sha256()
    for part in (source.read_bytes(), (native / "edgeboost.h").read_bytes()):
        key.update(hashlib.sha256(part).digest())
    key.update("\0".join([compiler, compiler_version(compiler), *flags]).encode())
    binary = _cache(cache_dir) / "drivers" / triple / key.hexdigest()[:16] / "parity_driver"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Build under a unique name and rename: concurrent builders never see a partial binary.
    partial = binary.with_name(f".parity_driver.{os.getpid()}")
    command = [compiler, *flags, f"-I{native}", str(source), "-o", str(partial), "-ldl"]
    _check_run(command, f"building the parity driver for {triple} failed", timeout=300)
    os.replace(partial, binary)
    _log.info("built %s", binary)
    return binary


def write_rows(path: str | Path, rows: np.ndarray) -> None:
    """Write 2-D float32 rows in the driver's input format."""
    data = np.ascontiguousarray(rows, dtype="<f4")
    if data.ndim != 2:
        raise ValueError(f"rows must be 2-D (n_rows, n_cols); got shape {data.shape}")
    with open(path, "wb") as file:
        file.write(_HEADER.pack(_ROWS_MAGIC, _FORMAT_VERSION, data.shape[0], data.shape[1], 0))
        file.write(data.tobytes())


def read_outputs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the driver's output: (margin, value), shaped (n,) or (n, n_out) like XGBoost's."""
    blob = Path(path).read_bytes()
    if len(blob) < _HEADER.size:
        raise EmulationError(f"{path}: truncated driver output ({len(blob)} bytes)")
    magic, version, n_rows, n_out, _ = _HEADER.unpack_from(blob)
    if magic != _OUT_MAGIC or version != _FORMAT_VERSION:
        raise EmulationError(f"{path}: not a parity driver output (magic {magic!r}, v{version})")
    values = np.frombuffer(blob, dtype="<f4", offset=_HEADER.size).astype(np.float32)
    if values.size != 2 * n_rows * n_out:
        raise EmulationError(
            f"{path}: holds {values.size} floats, header says 2 x {n_rows} x {n_out}"
        )
    shape = (n_rows,) if n_out == 1 else (n_rows, n_out)
    margin, value = np.split(values, 2)
    return margin.reshape(shape), value.reshape(shape)


def run_library(
    triple: str,
    library_path: str | Path,
    rows: np.ndarray,
    *,
    cache_dir: str | Path | None = None,
    timeout: float = 900.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict ``rows`` with a ``triple`` model library via the driver: (margin, value)."""
    library = Path(library_path).resolve()
    if not library.is_file():
        raise EmulationError(f"{library}: no such library")
    driver = build_driver(triple, cache_dir)
    prefix = qemu_prefix(triple)
    with tempfile.TemporaryDirectory(prefix="edgeboost-parity-") as scratch:
        rows_file, out_file = Path(scratch) / "rows.bin", Path(scratch) / "out.bin"
        write_rows(rows_file, rows)
        command = [*prefix, str(driver), str(library), str(rows_file), str(out_file)]
        _check_run(command, f"the parity driver failed on {triple}", timeout=timeout)
        margin, value = read_outputs(out_file)
    if len(margin) != len(rows):
        raise EmulationError(f"driver returned {len(margin)} rows for {len(rows)}")
    return margin, value


# ---------------------------------------------------------------------------------------------
# The target's own Python: a Debian bookworm userland unpacked from .debs


def prepare_python_root(triple: str, cache_dir: str | Path | None = None) -> Path:
    """Return a bookworm userland for ``triple`` with python3.11 + python3-cffi, made once.

    Cached under ``cache_dir/python/<triple>``: the resolved package list, the .debs and the
    unpacked root. Needs dpkg and apt with Debian bookworm sources; adds the dpkg architecture
    and runs apt-get update when root (otherwise says which commands to run).
    """
    emulator = _emulator(triple)
    base = _cache(cache_dir) / "python" / triple
    root, stamp = base / "root", base / "ready.json"
    if _root_ready(root, stamp):
        return root
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / ".lock"):
        if _root_ready(root, stamp):  # another process finished it while we waited
            return root
        started = time.monotonic()
        for tool, package in (("dpkg", "dpkg"), ("dpkg-deb", "dpkg"), ("apt-get", "apt")):
            if shutil.which(tool) is None:
                raise MissingToolError(
                    f"{tool} is not on PATH; a Debian-based host is needed ({package})"
                )
        debs = _fetch(emulator.debian_arch, base)
        staging = Path(tempfile.mkdtemp(prefix=".root-", dir=base))
        try:
            _unpack(debs, staging)
            version = _smoke_test(triple, staging)
            stamp.unlink(missing_ok=True)
            shutil.rmtree(root, ignore_errors=True)
            staging.rename(root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        details = {"python": version, "packages": len(debs)}
        stamp.write_text(json.dumps({**details, "seconds": round(time.monotonic() - started, 1)}))
        _log.info("prepared %s userland in %s: %s", triple, root, details)
    return root


def run_python(
    triple: str,
    root: str | Path,
    args: Sequence[str],
    *,
    pythonpath: Sequence[str | Path] = (),
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    """Run the userland's python3.11 with ``args`` under qemu; output captured as text.

    The environment is built from scratch (the host's PYTHON* variables and site-packages
    never leak in): PYTHONPATH is ``pythonpath``, then ``env`` is applied on top. Python
    finds its stdlib and dist-packages inside ``root`` from its own path.
    """
    root = Path(root).resolve()
    python = root / PYTHON
    if not python.exists():
        raise EmulationError(f"{python} does not exist; call prepare_python_root({triple!r}) first")
    environment = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": os.pathsep.join(str(Path(p).resolve()) for p in pythonpath),
    }
    environment.update(env or {})
    command = [*qemu_prefix(triple, sysroot=root), str(python), *args]
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EmulationError(
            f"{triple} python timed out after {timeout:.0f}s", command=command
        ) from exc


def _root_ready(root: Path, stamp: Path) -> bool:
    return stamp.is_file() and (root / PYTHON).is_file()


def _fetch(arch: str, base: Path) -> list[Path]:
    """The .debs of the userland, downloaded once into ``base/debs``."""
    saved = base / "packages.json"
    had_list = saved.is_file()
    try:
        return _download(_package_list(arch, saved), arch, base / "debs")
    except EmulationError:
        if not had_list:
            raise
        # A kept list can name versions the mirror has since replaced: resolve afresh once.
        saved.unlink()
        return _download(_package_list(arch, saved), arch, base / "debs")


def _package_list(arch: str, saved: Path) -> list[DebPackage]:
    """The closure of ROOT_PACKAGES for ``arch``, resolved by apt once and then kept."""
    if saved.is_file():
        return [DebPackage(**p) for p in json.loads(saved.read_text())]
    updated = _ensure_architecture(arch)
    try:
        packages = _resolve(arch)
    except EmulationError:
        if updated or os.geteuid() != 0:
            raise
        _apt_update()  # the lists may predate this architecture or be stale; retry once
        packages = _resolve(arch)
    names = {p.name for p in packages}
    if "python3.11" not in names:
        raise EmulationError(
            f"apt resolves python3 for {arch} without python3.11 (got "
            f"{sorted(n for n in names if n.startswith('python3'))}); the apt sources must be "
            "Debian bookworm"
        )
    saved.write_text(json.dumps([asdict(p) for p in packages], indent=1))
    return packages


def _ensure_architecture(arch: str) -> bool:
    """Make dpkg/apt know ``arch``; returns True when it had to add it (lists were updated)."""
    native = _output(["dpkg", "--print-architecture"]).strip()
    foreign = _output(["dpkg", "--print-foreign-architectures"]).split()
    if arch == native or arch in foreign:
        return False
    if os.geteuid() != 0:
        raise MissingToolError(
            f"dpkg does not know architecture {arch}; as root run: "
            f"dpkg --add-architecture {arch} && apt-get update  (or .ci/install-cross.sh)"
        )
    _log.info("dpkg --add-architecture %s", arch)
    _check_run(["dpkg", "--add-architecture", arch], f"dpkg --add-architecture {arch} failed")
    _apt_update()
    return True


def _apt_update() -> None:
    # apt-get update exits non-zero when any index fails (a mirror mid-sync, an unrelated
    # repository); resolution below decides whether what we need is there.
    result = subprocess.run(["apt-get", "update"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        _log.warning("apt-get update reported errors:\n%s", result.stderr.strip())


def _apt_options(arch: str, status_file: Path | None = None) -> list[str]:
    """Make apt treat ``arch`` as the only architecture, as on a device of that arch."""
    options = ["-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures::={arch}"]
    if status_file is not None:
        # An empty dpkg status: resolve as for an empty system, ignoring what the host has.
        options += ["-o", f"Dir::State::status={status_file}"]
    return options


_INST = re.compile(r"^Inst (?P<name>[^\s:]+)\S* \((?P<version>\S+) .*\[(?P<arch>[^\]\s]+)\]\)")


def _resolve(arch: str) -> list[DebPackage]:
    with tempfile.TemporaryDirectory(prefix="edgeboost-apt-") as scratch:
        status = Path(scratch) / "status"
        status.touch()
        command = [
            "apt-get",
            "--simulate",
            "--no-install-recommends",
            *_apt_options(arch, status),
            "install",
            *ROOT_PACKAGES,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    packages = []
    for line in result.stdout.splitlines():
        match = _INST.match(line)
        if match:
            packages.append(DebPackage(**match.groupdict()))
    if result.returncode != 0 or not packages:
        raise EmulationError(
            f"apt cannot resolve {' '.join(ROOT_PACKAGES)} for {arch}",
            command=command,
            returncode=result.returncode,
            stderr=result.stderr + result.stdout[-2000:],
        )
    return packages


def _download(packages: Sequence[DebPackage], arch: str, folder: Path) -> list[Path]:
    """Fetch the .debs not already in ``folder`` (apt checks them against the signed lists)."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not (folder / p.filename).is_file()]
    if missing:
        _log.info("downloading %d .debs for %s", len(missing), arch)
        command = ["apt-get", "download", *_apt_options(arch)]
        command += [f"{p.name}={p.version}" for p in missing]
        _check_run(command, f"apt-get download for {arch} failed", cwd=folder, timeout=1800)
    still = [p.filename for p in packages if not (folder / p.filename).is_file()]
    if still:
        raise EmulationError(f"apt-get download did not produce {', '.join(still)} in {folder}")
    return [folder / p.filename for p in packages]


def _unpack(debs: Sequence[Path], root: Path) -> None:
    # Files only: no maintainer scripts run, which python3 does not need to start.
    for deb in debs:
        _check_run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name} failed")


def _smoke_test(triple: str, root: Path) -> str:
    """Start the new userland's Python once: it must import cffi from inside the root.

    Also leaves .pyc files for those modules in the root, so later starts are faster.
    """
    script = (
        "import sys, " + ", ".join(_SMOKE_IMPORTS) + "\n"
        "print(sys.version.split()[0]); print(cffi.__file__)"
    )
    result = run_python(triple, root, ["-c", script], timeout=600)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2:
        raise EmulationError(
            f"the {triple} userland's python does not start",
            command=[PYTHON, "-c", "..."],
            returncode=result.returncode,
            stderr=result.stderr,
        )
    version, cffi_file = lines
    if not Path(cffi_file).resolve().is_relative_to(root.resolve()):
        raise EmulationError(f"{triple} python imported cffi from {cffi_file}, outside {root}")
    return version


# ---------------------------------------------------------------------------------------------
# Helpers


def _cache(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (pytest-xdist workers, parallel CI steps)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _output(command: Sequence[str]) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EmulationError(
            "command failed", command=command, returncode=result.returncode, stderr=result.stderr
        )
    return result.stdout


def _check_run(
    command: Sequence[str], message: str, *, cwd: Path | None = None, timeout: float = 600.0
) -> None:
    try:
        result = subprocess.run(
            list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise EmulationError(f"{message}: timed out after {timeout:.0f}s", command=command) from exc
    if result.returncode != 0:
        raise EmulationError(
            message, command=command, returncode=result.returncode, stderr=result.stderr
        )


# ---------------------------------------------------------------------------------------------
# Command line


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m edgeboost.compile.emulation", description=__doc__
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="build the parity drivers and target userlands")
    prepare.add_argument(
        "--target",
        action="append",
        required=True,
        help="a target triple, or 'all' (repeatable)",
    )
    prepare.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"cache folder (default: ${CACHE_ENV_VAR} or ~/.cache/edgeboost/emulation)",
    )
    prepare.add_argument("--no-python", action="store_true", help="build the drivers only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``prepare``: warm the cache (drivers for every target, userlands for emulated ones)."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = args.cache or default_cache_dir()
    triples = [t for name in args.target for t in (EMULATORS if name == "all" else (name,))]
    try:
        for triple in dict.fromkeys(triples):
            started = time.monotonic()
            driver = build_driver(triple, cache)
            print(f"{triple}: driver {driver} ({time.monotonic() - started:.1f}s)")
            if args.no_python or not needs_emulation(triple):
                continue
            started = time.monotonic()
            root = prepare_python_root(triple, cache)
            print(f"{triple}: python userland {root} ({time.monotonic() - started:.1f}s)")
    except EmulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

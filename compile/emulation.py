"""Run target libraries, and a real target Python, on this machine under qemu-user.

Host side only (stdlib + numpy), used by the parity tests and by CI:

- ``qemu_prefix(triple)``: the command prefix that runs a target's program here (empty for
  the host's own target). binfmt_misc is not assumed: qemu is always invoked explicitly.
- ``build_driver`` / ``run_library``: native/parity_driver.c, built per target and cached by
  source hash, runs a model library on float32 rows and returns margins and values.
- ``prepare_python_root`` / ``run_python``: a Debian userland with python3 and python3-cffi
  (bookworm: Python 3.11, or bullseye: Python 3.9; see compile/debian.py), unpacked from
  .debs with ``dpkg-deb -x`` (no debootstrap, no chroot), and that Python run under qemu
  with a clean environment.

Warm the cache from CI with:
``python -m edgeboost.compile.emulation prepare --target all [--suite bullseye] --cache DIR``
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
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

from edgeboost.caches import cache_dir
from edgeboost.runtime.targets import TARGETS, host_target

from .debian import DEFAULT_SUITE, SUITES, DebPackage, PrivateApt
from .errors import EmulationError, MissingToolError, ToolchainError
from .toolchain import TOOLCHAINS, compiler_version

__all__ = [
    "EMULATORS",
    "PYTHON3",
    "SUITES",
    "DebPackage",
    "EmulationError",
    "Emulator",
    "MissingToolError",
    "build_driver",
    "default_cache_dir",
    "main",
    "needs_emulation",
    "prepare_python_root",
    "python3",
    "qemu_prefix",
    "read_outputs",
    "run_library",
    "run_python",
    "write_rows",
]

_log = logging.getLogger(__name__)

QEMU_PACKAGE = "qemu-user-static"
CACHE_ENV_VAR = "EDGEBOOST_EMULATION_CACHE"
# The userland's interpreter, as the recipe calls it (a symlink to python3.11, python3.9, ...).
PYTHON3 = "usr/bin/python3"
# Imported by the smoke test of a fresh userland: what the runtime needs to start.
_SMOKE_IMPORTS = ("cffi", "_cffi_backend", "json", "hashlib", "logging", "threading", "array")
_DRIVER_FLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra")
_ROWS_MAGIC, _OUT_MAGIC, _FORMAT_VERSION = b"EBPR", b"EBPO", 1
# magic, version, n_rows, n_cols (or n_out), reserved: see native/parity_driver.c.
_HEADER = struct.Struct("<4sIqii")


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
    return cache_dir("emulation", CACHE_ENV_VAR)


def build_driver(triple: str, cache_dir: str | Path | None = None) -> Path:
    """Build native/parity_driver.c for ``triple``, or reuse the cached build of this source."""
    native = Path(str(resources.files("edgeboost.native")))
    source = native / "parity_driver.c"
    compiler = _cross_compiler(triple)
    flags = (*_DRIVER_FLAGS, *TOOLCHAINS[triple].flags)
    key = hashlib.sha256()
    for name in ("parity_driver.c", "edgeboost.h", "rows_file.h"):  # what the driver includes
        part = (native / name).read_bytes()
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


def read_outputs(path: str | Path, value_width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the driver's output: (margin, value), shaped (n,) or (n, n_out) like XGBoost's.

    ``value_width``: values per row without margin when they are fewer than the margins
    (1 for multi:softmax, whose library writes the class indices to the first n_rows slots).
    """
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
    width = n_out if value_width is None else value_width
    value = value[: n_rows * width]
    return margin.reshape(shape), value.reshape((n_rows,) if width == 1 else (n_rows, width))


def run_library(
    triple: str,
    library_path: str | Path,
    rows: np.ndarray,
    *,
    cache_dir: str | Path | None = None,
    timeout: float = 900.0,
    value_width: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict ``rows`` with a ``triple`` model library via the driver: (margin, value).

    ``value_width``: see ``read_outputs`` (``SourceModel.value_width``)."""
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
        margin, value = read_outputs(out_file, value_width)
    if len(margin) != len(rows):
        raise EmulationError(f"driver returned {len(margin)} rows for {len(rows)}")
    return margin, value


# ---------------------------------------------------------------------------------------------
# The target's own Python: a Debian userland unpacked from .debs


def prepare_python_root(
    triple: str, cache_dir: str | Path | None = None, *, suite: str = DEFAULT_SUITE
) -> Path:
    """Return a ``suite`` userland for ``triple`` with its python3 + python3-cffi, made once.

    Cached under ``cache_dir/python/<suite>/<triple>``: apt's private state, the resolved
    package list, the .debs and the unpacked root. Needs apt-get and dpkg-deb (any Debian-based
    host: the suite's packages come from its own sources list, see compile/debian.py).
    """
    emulator = _emulator(triple)
    try:
        release = SUITES[suite]
    except KeyError:
        raise EmulationError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}") from None
    base = _cache(cache_dir) / "python" / suite / triple
    root, stamp = base / "root", base / "ready.json"
    if _root_ready(root, stamp):
        return root
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / ".lock"):
        if _root_ready(root, stamp):  # another process finished it while we waited
            return root
        started = time.monotonic()
        if shutil.which("dpkg-deb") is None:
            raise MissingToolError("dpkg-deb is not on PATH; a Debian-based host is needed (dpkg)")
        debs = _fetch(PrivateApt(release, emulator.debian_arch, base / "apt"), base)
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
        details = {"suite": suite, "python": version, "packages": len(debs)}
        stamp.write_text(json.dumps({**details, "seconds": round(time.monotonic() - started, 1)}))
        _log.info("prepared %s userland in %s: %s", triple, root, details)
    return root


def python3(root: str | Path) -> Path:
    """The userland's python3 (bookworm: python3.11, bullseye: python3.9), as a device runs it.

    /usr/bin/python3 is a symlink; it is resolved here, inside ``root`` (an absolute target
    would otherwise name the host's own interpreter), so that qemu runs the real binary.
    """
    link = Path(root) / PYTHON3
    if not link.is_symlink():
        return link
    target = Path(os.readlink(link))
    return Path(root) / target.relative_to("/") if target.is_absolute() else link.parent / target


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
    """Run the userland's python3 with ``args`` under qemu; output captured as text.

    The environment is built from scratch (the host's PYTHON* variables and site-packages
    never leak in): PYTHONPATH is ``pythonpath``, then ``env`` is applied on top. Python
    finds its stdlib and dist-packages inside ``root`` from its own path.
    """
    root = Path(root).resolve()
    python = python3(root)
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
    return stamp.is_file() and python3(root).is_file()


def _fetch(apt: PrivateApt, base: Path) -> list[Path]:
    """The .debs of the userland, resolved once (kept in packages.json) and downloaded once."""
    saved = base / "packages.json"
    if saved.is_file():
        try:
            packages = [DebPackage(**p) for p in json.loads(saved.read_text())]
            return apt.download(packages, base / "debs")
        except EmulationError:
            # A kept list can name versions the mirror has since replaced: resolve afresh.
            saved.unlink()
    apt.update()
    packages = apt.resolve()
    saved.write_text(json.dumps([asdict(p) for p in packages], indent=1))
    return apt.download(packages, base / "debs")


def _unpack(debs: Sequence[Path], root: Path) -> None:
    # Files only: no maintainer scripts run, which python3 does not need to start.
    for deb in debs:
        _check_run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name} failed")
    # From trixie on, packages ship their files under /usr only, and the /lib -> usr/lib
    # aliases of a merged-/usr system are made at installation, not by any package: without
    # them qemu finds no /lib/ld-linux-*.so (the interpreter programs name). Older suites
    # ship /lib themselves and are left as they are.
    for alias in ("bin", "sbin", "lib", "lib64"):
        if (root / "usr" / alias).is_dir() and not (root / alias).exists():
            (root / alias).symlink_to(f"usr/{alias}")


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
            command=[PYTHON3, "-c", "..."],
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
    prepare.add_argument(
        "--suite",
        action="append",
        choices=list(SUITES),
        help=f"the Debian release of the userlands (repeatable; default {DEFAULT_SUITE})",
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
            for suite in args.suite or [DEFAULT_SUITE]:
                started = time.monotonic()
                root = prepare_python_root(triple, cache, suite=suite)
                seconds = time.monotonic() - started
                print(f"{triple}: {suite} python userland {root} ({seconds:.1f}s)")
    except EmulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

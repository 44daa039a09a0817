"""Compilers and flags per target, and building one shared library from C sources.

Commands are argument lists (never a shell). Translation units of every target share one
pool of workers, so a 2-core machine builds three targets with both cores busy throughout.
"""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edgeboost.runtime.targets import TARGETS

from .errors import ToolchainError

__all__ = [
    "COMMON_FLAGS",
    "DEFAULT_OPTIMIZATION",
    "TOOLCHAINS",
    "BuiltLibrary",
    "LibraryJob",
    "Toolchain",
    "build_libraries",
]

_log = logging.getLogger(__name__)

# -ffp-contract=off: no fused multiply-add, so every target rounds like XGBoost's x86 build.
# Never -ffast-math/-Ofast: they delete the isnan() that routes missing values.
# -fvisibility=hidden: only the edgeboost_* ABI is exported (native/edgeboost.h).
# The optimisation level is the job's (LibraryJob.optimization): a backend may want another.
COMMON_FLAGS = ("-fPIC", "-std=gnu11", "-ffp-contract=off", "-fvisibility=hidden")
DEFAULT_OPTIMIZATION = "-O2"
LINK_FLAGS = ("-shared", "-s", "-lm")


@dataclass(frozen=True, slots=True)
class Toolchain:
    triple: str
    compiler: str
    flags: tuple[str, ...]
    debian_package: str
    # The target's C library headers; Debian only recommends them with the cross compiler.
    libc_package: str
    gnu_triple: str

    def resolve(self) -> str:
        """The compiler's path; on its own machine a target may also use plain gcc."""
        native = platform.machine() in TARGETS[self.triple].machines
        for candidate in (self.compiler, "gcc") if native else (self.compiler,):
            found = shutil.which(candidate)
            if found:
                if not native and not Path(f"/usr/{self.gnu_triple}/include/stdio.h").exists():
                    raise ToolchainError(
                        f"{self.compiler} has no C library headers for {self.triple}; "
                        f"install them with: apt-get install {self.libc_package}"
                    )
                return found
        raise ToolchainError(
            f"no C compiler for {self.triple}: {self.compiler} is not on PATH; "
            f"install it with: apt-get install {self.debian_package} {self.libc_package}"
        )


TOOLCHAINS: dict[str, Toolchain] = {
    t.triple: t
    for t in (
        Toolchain(
            "x86_64-linux-gnu",
            "x86_64-linux-gnu-gcc",
            (),
            "gcc-x86-64-linux-gnu",
            "libc6-dev-amd64-cross",
            "x86_64-linux-gnu",
        ),
        Toolchain(
            "aarch64-linux-gnu",
            "aarch64-linux-gnu-gcc",
            (),
            "gcc-aarch64-linux-gnu",
            "libc6-dev-arm64-cross",
            "aarch64-linux-gnu",
        ),
        # ARMv7-A with the VFPv3-D16 FPU every armv7 hard-float board has (NEON is optional
        # on ARMv7, and Debian's armhf baseline assumes it is absent).
        Toolchain(
            "armv7-linux-gnueabihf",
            "arm-linux-gnueabihf-gcc",
            ("-march=armv7-a", "-mfpu=vfpv3-d16", "-mfloat-abi=hard"),
            "gcc-arm-linux-gnueabihf",
            "libc6-dev-armhf-cross",
            "arm-linux-gnueabihf",
        ),
    )
}
assert TOOLCHAINS.keys() == TARGETS.keys(), "every runtime target needs a toolchain"


@dataclass(frozen=True)
class LibraryJob:
    """One library to build: a target, its sources, include folders and optimisation level."""

    triple: str
    sources: tuple[Path, ...]
    include_dirs: tuple[Path, ...]
    work_dir: Path
    optimization: str = DEFAULT_OPTIMIZATION


@dataclass(frozen=True)
class BuiltLibrary:
    triple: str
    path: Path
    compiler: str
    compiler_version: str
    flags: tuple[str, ...]
    build_seconds: float


@cache
def compiler_version(compiler: str) -> str:
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0].strip() if result.returncode == 0 else "unknown"


def _run(command: Sequence[str]) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolchainError(
            "compiler failed", command=command, returncode=result.returncode, stderr=result.stderr
        )


def build_libraries(
    jobs: Sequence[LibraryJob],
    *,
    workers: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, BuiltLibrary]:
    """Compile every job's sources in one pool of ``workers``, then link each library."""
    say = progress or _log.info
    resolved = {job.triple: TOOLCHAINS[job.triple].resolve() for job in jobs}
    # Compiler seconds per target (summed over its units), comparable however many run at once.
    seconds = dict.fromkeys(resolved, 0.0)
    tasks = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for job in jobs:
            toolchain = TOOLCHAINS[job.triple]
            job.work_dir.mkdir(parents=True, exist_ok=True)
            includes = [f"-I{d}" for d in job.include_dirs]
            for source in job.sources:
                obj = job.work_dir / (source.stem + ".o")
                command = [
                    resolved[job.triple],
                    job.optimization,
                    *COMMON_FLAGS,
                    *toolchain.flags,
                    *includes,
                    "-c",
                    str(source),
                    "-o",
                    str(obj),
                ]
                tasks.append((job.triple, source.name, pool.submit(_timed_run, command)))
        for done, (triple, name, future) in enumerate(tasks, 1):
            elapsed = future.result()
            seconds[triple] += elapsed
            if len(tasks) > 4:
                say(f"  [{done}/{len(tasks)}] {triple}: {name} compiled in {elapsed:.1f}s")

    built = {}
    for job in jobs:
        toolchain = TOOLCHAINS[job.triple]
        library = job.work_dir / "libmodel.so"
        objects = [str(job.work_dir / (s.stem + ".o")) for s in job.sources]
        seconds[job.triple] += _timed_run(
            [resolved[job.triple], *toolchain.flags, *objects, "-o", str(library), *LINK_FLAGS]
        )
        built[job.triple] = BuiltLibrary(
            triple=job.triple,
            path=library,
            compiler=Path(resolved[job.triple]).name,
            compiler_version=compiler_version(resolved[job.triple]),
            flags=(job.optimization, *COMMON_FLAGS, *toolchain.flags),
            build_seconds=round(seconds[job.triple], 2),
        )
    return built


def _timed_run(command: Sequence[str]) -> float:
    started = time.monotonic()
    _run(command)
    return time.monotonic() - started

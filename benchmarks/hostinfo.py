"""Facts about the machine and the software a run measured (stdlib only)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from .results import HostFacts

__all__ = ["host_facts", "load_average", "versions"]

_REPO = Path(__file__).resolve().parents[1]
_DISTRIBUTIONS = (
    "edgeboost",
    "xgboost-cpu",
    "xgboost",
    "treelite",
    "tl2cgen",
    "onnxruntime",
    "onnxmltools",
    "onnx",
    "daal4py",
    "numpy",
    "cffi",
    "awsiotsdk",
    "awscrt",
    "matplotlib",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _compiler(name: str) -> str | None:
    try:
        result = subprocess.run([name, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return result.stdout.splitlines()[0] if result.returncode == 0 and result.stdout else None


def versions(extra: Iterable[str] = ()) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in dict.fromkeys((*_DISTRIBUTIONS, *extra)):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    for compiler in ("gcc", "aarch64-linux-gnu-gcc", "arm-linux-gnueabihf-gcc"):
        line = _compiler(compiler)
        if line:
            found[compiler] = line
    return found


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def host_facts() -> HostFacts:
    status = _git("status", "--porcelain")
    return HostFacts(
        cpu_model=_cpu_model(),
        logical_cores=os.cpu_count(),
        usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        memory_gib=_memory_gib(),
        machine=platform.machine(),
        kernel=platform.release(),
        os=platform.platform(),
        git_commit=_git("rev-parse", "HEAD"),
        git_dirty=bool(status) if status is not None else None,
        load_average_at_start=load_average(),
    )

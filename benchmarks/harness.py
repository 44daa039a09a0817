"""The C harness (c_bench.c): a bundle's library timed from C, with no Python in the process.

It is linked directly against the bundle's ``libmodel.so`` (``-lmodel`` with an rpath), so a
call costs exactly what a C program on the device would pay.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from array import array
from importlib import resources
from pathlib import Path

from .measure import Measurement

__all__ = ["HarnessError", "build_harness", "run_harness"]

_FLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror")


class HarnessError(RuntimeError):
    """Building or running the C harness failed."""


def build_harness(library: Path, out: Path) -> Path:
    """Compile c_bench.c against ``library`` (a host libmodel.so) into ``out``."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise HarnessError("no C compiler (gcc or cc) on PATH; install gcc")
    source = Path(str(resources.files("edgeboost.benchmarks").joinpath("c_bench.c")))
    native = Path(str(resources.files("edgeboost.native")))
    libdir = library.resolve().parent
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        compiler,
        *_FLAGS,
        f"-I{native}",
        str(source),
        "-o",
        str(out),
        f"-L{libdir}",
        "-lmodel",
        f"-Wl,-rpath,{libdir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HarnessError(f"building the C harness failed: {' '.join(command)}\n{result.stderr}")
    return out


def run_harness(binary: Path, rows_file: Path, batch: int, calls: int) -> Measurement:
    """Run ``calls`` timed calls of ``batch`` rows; the harness reports its own clocks."""
    with tempfile.TemporaryDirectory(prefix="edgeboost-cbench-") as scratch:
        samples_file = Path(scratch) / "samples.bin"
        command = [str(binary), str(rows_file), str(batch), str(calls), str(samples_file)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise HarnessError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        report = json.loads(result.stdout)
        blob = samples_file.read_bytes()
    per_call = array("q")
    per_call.frombytes(blob)
    if len(per_call) != calls:
        raise HarnessError(f"the harness wrote {len(per_call)} samples for {calls} calls")
    return Measurement(
        batch=batch,
        calls=calls,
        wall_ns=int(report["wall_ns"]),
        cpu_ns=int(report["cpu_ns"]),
        per_call_ns=per_call,
    )

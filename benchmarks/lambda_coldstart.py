"""Cold start of the Lambda zip: import, load and first request in fresh processes.

``python -m edgeboost.benchmarks.lambda_coldstart BUNDLE... -o DIR [--runs N]`` packages each
bundle with ``edgeboost package --lambda`` (python3.13), unpacks the zip of this machine's
architecture into an empty folder and starts, N times, a fresh process of this machine's
Python 3.13 in that folder, as Lambda's runtime would: import the handler's module, load the
bundle, answer one Function URL request (samples of the model's width). Writes
``lambda.json`` and ``LAMBDA.md``.

Two ways of starting, interleaved: as on Lambda, where /var/task is read-only, so no .pyc
can be cached and every module is compiled from source at each cold start; and with .pyc
compiled beforehand (``compileall``), to show what shipping them would save. Lambda's own
work before the import (fetching and unpacking the zip, starting its runtime client) is not
measured: there is no Lambda here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeboost.recipes.lambda_package import (
    ARCHITECTURES,
    DEFAULT_RUNTIME,
    RUNTIMES,
    package_lambda,
)
from edgeboost.runtime.manifest import Manifest
from edgeboost.runtime.targets import host_target

from .hostinfo import host_facts

__all__ = ["find_python", "main", "measure"]

# What the old image took to import its stack (python, pandas, xgboost, scikit-learn), as
# measured on the 1.7 GB container image (not here).
OLD_IMAGE_IMPORT_S = 1.2
OLD_IMAGE_BYTES = 1.7e9

# The fresh process. json and time are imported before the clock starts, as Lambda's runtime
# client has imported them before it imports the handler.
_CHILD = r"""
import json, sys, time
started = time.perf_counter()
from edgeboost.runtime import lambda_handler
imported = time.perf_counter()
lambda_handler._default_model()
loaded = time.perf_counter()
answer = lambda_handler.handler(json.loads(sys.argv[1]), None)
answered = time.perf_counter()
assert answer["statusCode"] == 200, answer
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(json.dumps({
    "import_s": imported - started,
    "load_s": loaded - imported,
    "first_request_s": answered - loaded,
    "vm_hwm_kib": int(hwm[0]),
}))
"""


def find_python(version: str) -> str | None:
    """This machine's python``version``: on PATH, else one of pyenv's (whose shims refuse a
    version that is installed but not selected); None when there is none."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(map(str, pyenv.glob(f"versions/{version}.*/bin/python{version}")))
    for candidate in filter(None, candidates):
        check = [candidate, "-c", "import sys; print(sys.executable)"]
        result = subprocess.run(check, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return result.stdout.strip()
    return None


def measure(zip_path: Path, python: str, event: dict[str, Any], runs: int) -> dict[str, Any]:
    """Medians (and ranges) of ``runs`` fresh processes per way of starting."""
    samples: dict[str, list[dict[str, float]]] = {"no_pyc": [], "pyc": [], "bare_python": []}
    with tempfile.TemporaryDirectory(prefix="edgeboost-lambda-") as scratch:
        folders = {"no_pyc": Path(scratch) / "task", "pyc": Path(scratch) / "task-pyc"}
        for folder in folders.values():
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(folder)
        compiled = subprocess.run(
            [
                python,
                "-c",
                f"import compileall; compileall.compile_dir({str(folders['pyc'])!r}, quiet=1)",
            ],
            capture_output=True,
            check=False,
        )
        if compiled.returncode != 0:
            raise RuntimeError(f"compileall failed: {compiled.stderr.decode()}")
        for _ in range(runs):
            for mode, folder in folders.items():
                samples[mode].append(_run(python, folder, event, bytecode=mode == "pyc"))
            started = time.perf_counter()
            subprocess.run([python, "-c", "pass"], check=True)
            samples["bare_python"].append({"process_s": time.perf_counter() - started})
    return {mode: _summary(values) for mode, values in samples.items()}


def _run(python: str, folder: Path, event: dict[str, Any], *, bytecode: bool) -> dict[str, float]:
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(folder),
        "PYTHONNOUSERSITE": "1",
        "EDGEBOOST_BUNDLE": str(folder / "bundle"),
    }
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # as a read-only /var/task
    started = time.perf_counter()
    result = subprocess.run(
        [python, "-c", _CHILD, json.dumps(event)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    process_s = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the cold start failed: {result.stderr}")
    return {**json.loads(result.stdout), "process_s": process_s}


def _summary(values: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        key: {
            "median": statistics.median(v[key] for v in values),
            "min": min(v[key] for v in values),
            "max": max(v[key] for v in values),
        }
        for key in values[0]
    }


def _event(manifest: Manifest) -> dict[str, Any]:
    """A Function URL POST of two records of the model's width (zeros and halves)."""
    records = [[0.0] * manifest.num_feature, [0.5] * manifest.num_feature]
    return {
        "version": "2.0",
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "headers": {"content-type": "application/json"},
        "body": json.dumps(records),
        "isBase64Encoded": False,
    }


def _markdown(report: dict[str, Any]) -> str:
    host, python = report["host"], report["python"]
    lines = [
        "# edgeboost on AWS Lambda: zip sizes and cold start",
        "",
        f"`python -m edgeboost.benchmarks.lambda_coldstart` on {host['cpu_model']}, "
        f"{host['logical_cores']} logical cores; commit `{(host['git_commit'] or '?')[:12]}`; "
        f"runtime {report['runtime']}, measured with Python {python} "
        f"(`{report['interpreter']}`), the {report['architecture']} zip.",
        "",
        "Protocol: the zip unpacked into an empty folder; per run, one fresh process started "
        "in it that imports `edgeboost.runtime.lambda_handler`, loads the bundle "
        "(`EDGEBOOST_BUNDLE`: every check of `Model.load`) and answers one Function URL request "
        "of two records; each step timed inside the process, the process from spawn to exit. "
        "Without .pyc, as on Lambda (/var/task is read-only: every module is compiled at each "
        "cold start), and with .pyc compiled beforehand; interleaved, "
        f"{report['runs']} runs each; medians (min-max). Lambda's own work before the import "
        "(fetching and unpacking the zip, starting its runtime client) is not included.",
        "",
        "| model | zip x86_64 / arm64 | start | import ms | load ms | first request ms "
        "| import + load + first request ms | process ms | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in report["models"]:
        sizes = " / ".join(f"{model['zip_bytes'][a] / 1000:,.0f} KB" for a in ("x86_64", "arm64"))
        for mode, label in (("no_pyc", "as on Lambda (no .pyc)"), ("pyc", "with .pyc")):
            m = model["cold_start"][mode]
            total = m["import_s"]["median"] + m["load_s"]["median"]
            total += m["first_request_s"]["median"]
            lines.append(
                f"| {model['name']} ({model['trees']} trees) | {sizes} | {label} | "
                f"{_ms(m['import_s'])} | {_ms(m['load_s'])} | {_ms(m['first_request_s'])} | "
                f"{total * 1000:.1f} | {_ms(m['process_s'])} | "
                f"{m['vm_hwm_kib']['median'] / 1024:.1f} |"
            )
    bare = report["models"][0]["cold_start"]["bare_python"]["process_s"]
    lines += [
        "",
        f"A bare `python{python} -c pass` takes {_ms(bare)} ms from spawn to exit here. "
        f"The old container image: {OLD_IMAGE_BYTES / 1e9:.1f} GB, and "
        f"{OLD_IMAGE_IMPORT_S:.1f} s to import python, pandas, xgboost and scikit-learn "
        "alone (measured on that image, not here), before any model was loaded.",
        "",
    ]
    return "\n".join(lines)


def _ms(stat: dict[str, float]) -> str:
    return f"{stat['median'] * 1000:.1f} ({stat['min'] * 1000:.1f}-{stat['max'] * 1000:.1f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeboost.benchmarks.lambda_coldstart")
    parser.add_argument("bundles", nargs="+", type=Path, help="bundles with x86_64 and aarch64")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args(argv)
    runtime = DEFAULT_RUNTIME
    python = RUNTIMES[runtime]
    interpreter = find_python(python)
    if interpreter is None:
        raise SystemExit(f"no python{python} here: the cold start is measured with the runtime's")
    architecture = next(a.name for a in ARCHITECTURES.values() if a.triple == host_target())
    models = []
    with tempfile.TemporaryDirectory(prefix="edgeboost-lambda-zips-") as scratch:
        for number, bundle in enumerate(args.bundles):
            package = package_lambda(bundle, Path(scratch) / str(number), runtime=runtime)
            manifest = Manifest.read(bundle)
            print(f"measuring {manifest.model.name} ({args.runs} runs)", file=sys.stderr)
            cold = measure(package.zips[architecture], interpreter, _event(manifest), args.runs)
            models.append(
                {
                    "name": manifest.model.name,
                    "trees": manifest.num_tree,
                    "zip_bytes": {a: p.stat().st_size for a, p in package.zips.items()},
                    "cold_start": cold,
                }
            )
    report = {
        "host": host_facts(),
        "runtime": runtime,
        "python": python,
        "interpreter": interpreter,
        "architecture": architecture,
        "runs": args.runs,
        "models": models,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "lambda.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.output / "LAMBDA.md").write_text(_markdown(report))
    print(args.output / "LAMBDA.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start-up and memory: one fresh process per engine, model and repeat.

The process imports the engine, loads the model and predicts one row (see coldstart.py), or
for the C harness runs one single-row call. Each reports its own peak RSS, VmHWM from
/proc/self/status just before it exits (``ru_maxrss`` of a child would not do: Linux carries
the parent's pages over from the fork into it). Its wall time runs from spawn to exit,
interpreter start included.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .engines import Artifacts, Engine
from .results import Failed, StartupSummary

__all__ = ["ColdstartError", "measure_coldstart"]


class ColdstartError(RuntimeError):
    """A start-up process failed."""


def _run_once(command: Sequence[str]) -> dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        message = result.stderr.strip()[-2000:]
        raise ColdstartError(f"{' '.join(command)} exited {result.returncode}: {message}")
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    if not report.get("vm_hwm_kib") or report["vm_hwm_kib"] < 0:
        raise ColdstartError(f"{command[0]} did not report its VmHWM (no /proc?)")
    report["process_wall_s"] = wall
    return report


def measure_coldstart(
    engines: Sequence[Engine],
    artifacts: Artifacts,
    repeats: int,
    *,
    say: Callable[[str], None] = print,
) -> dict[str, StartupSummary | Failed]:
    """Per engine: medians over ``repeats`` fresh processes (engines interleaved)."""
    runs: dict[str, list[dict[str, Any]]] = {e.key: [] for e in engines}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgeboost-coldstart-") as scratch:
        artifacts_file = Path(scratch) / "artifacts.json"
        artifacts_file.write_text(artifacts.to_json())
        for _ in range(repeats):
            for engine in engines:
                if engine.key in errors:
                    continue
                try:
                    command = engine.coldstart_command(artifacts_file, artifacts)
                    runs[engine.key].append(_run_once(command))
                except (ColdstartError, OSError, ValueError) as exc:
                    errors[engine.key] = str(exc)
                    say(f"  start-up of {engine.key} failed: {exc}")
    results: dict[str, StartupSummary | Failed] = {}
    for key, reports in runs.items():
        if key in errors:
            results[key] = Failed(errors[key])
            continue
        peak = [r["vm_hwm_kib"] for r in reports]
        baseline = [r["baseline_hwm_kib"] for r in reports if r.get("baseline_hwm_kib")]
        results[key] = StartupSummary(
            processes=len(reports),
            process_wall_s=statistics.median(r["process_wall_s"] for r in reports),
            import_s=_median(reports, "import_s"),
            load_s=_median(reports, "load_s"),
            first_predict_s=_median(reports, "first_predict_s"),
            peak_rss_mib=statistics.median(peak) / 1024,
            peak_rss_mib_max=max(peak) / 1024,
            before_import_mib=statistics.median(baseline) / 1024 if baseline else None,
        )
    return results


def _median(reports: list[dict[str, Any]], name: str) -> float | None:
    """The median of a step's seconds, None where no process reports it (the C harness)."""
    values = [r[name] for r in reports if r.get(name) is not None]
    return statistics.median(values) if values else None

"""The fresh process of the start-up measurement: import, load, predict one row, report.

``python -m edgeboost.benchmarks.coldstart ENGINE ARTIFACTS_JSON`` prints one JSON line with
the seconds each step took and this process's VmHWM/VmRSS. Only the standard library and the
engine's own imports are loaded, so the numbers are the engine's.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "proc_status_kib"]


def proc_status_kib(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS), or None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(
            "usage: python -m edgeboost.benchmarks.coldstart ENGINE ARTIFACTS_JSON", file=sys.stderr
        )
        return 2
    from .engines import ENGINES, Artifacts

    engine = ENGINES[args[0]]
    artifacts = Artifacts.from_json(Path(args[1]).read_text())
    baseline = proc_status_kib("VmHWM")
    started = time.perf_counter()
    engine.import_modules()
    imported = time.perf_counter()
    session = engine.open(artifacts)
    loaded = time.perf_counter()
    row = [0.0] * len(artifacts.feature_names)
    session.predict(session.coldstart_input(row))
    predicted = time.perf_counter()
    report = {
        "import_s": imported - started,
        "load_s": loaded - imported,
        "first_predict_s": predicted - loaded,
        "baseline_hwm_kib": baseline,
        "vm_hwm_kib": proc_status_kib("VmHWM"),
        "vm_rss_kib": proc_status_kib("VmRSS"),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

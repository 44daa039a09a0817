"""What Python adds to a one-row call: the same library called from C and from Python.

Per model, the default backend's library for this machine, one row per call, every way in the
same rounds (the first way rotating per round, as in timing.py):

- ``c``: the c_bench harness, linked against the library (its own process, ``clock_gettime``);
- ``cffi``: ``edgeboost_predict`` called through cffi on C buffers made before timing (the
  library loaded with ``runtime.native.load_library``): the least any Python caller pays;
- ``numpy``, ``list``, ``dict``: ``Model.predict`` with a (1, n) float32 array, ``[[x, ...]]``
  and ``[{name: x, ...}]``, on the timing rows (missing: NaN, NaN and None, as JSON decodes
  null); ``dict-complete``: dicts of rows with no missing value;
- ``noop``: the timing loop around a no-op builtin, the share of every Python figure that is
  the clock and the loop (shown, never subtracted).

Each way's figure is the p50 over every call of every round; its overhead is that minus the C
call's p50, judged against ``performance_targets.ONE_ROW_OVERHEAD`` for the ``Model.predict``
ways.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import BenchConfig
from .harness import build_harness, run_harness
from .measure import Measurement, time_calls
from .models import ModelCase, timing_rows
from .performance_targets import ONE_ROW_OVERHEAD
from .results import OneRowCall, OneRowOverhead
from .timing import round_p50s_us

__all__ = ["DISTINCT_ROWS", "JUDGED_WAYS", "WAYS", "measure_overhead"]

# way -> what it is, in the order the report shows them.
WAYS: dict[str, str] = {
    "c": "C (c_bench, linked against the library)",
    "cffi": "raw cffi call on prepared C buffers",
    "numpy": "Model.predict, numpy (1, n) float32 row",
    "list": "Model.predict, list row [[x, ...]] (missing: NaN)",
    "dict": "Model.predict, dict row [{name: x}] (missing: None)",
    "dict-complete": "Model.predict, dict row, rows with no missing value",
    "noop": "the timing loop around a no-op (the clock's share)",
}
# The ways the overhead target is judged on: what callers of Model.predict pay.
JUDGED_WAYS = ("numpy", "list", "dict", "dict-complete")
DISTINCT_ROWS = 256


def _records(rows: np.ndarray, names: Sequence[str]) -> list[list[dict[str, float | None]]]:
    """One-row requests as JSON decodes them: a list of one dict, null for missing."""
    return [
        [{n: (None if math.isnan(v) else v) for n, v in zip(names, row, strict=True)}]
        for row in rows.tolist()
    ]


def _python_ways(
    bundle: Path, rows: np.ndarray, complete: np.ndarray, names: Sequence[str]
) -> dict[str, Any]:
    """way -> (predict, inputs) for the ways timed in this process."""
    from edgeboost.runtime import Model
    from edgeboost.runtime.manifest import Manifest
    from edgeboost.runtime.native import load_library

    model = Model.load(bundle)
    manifest = Manifest.read(bundle)
    library = bundle / manifest.targets[model.target].file
    native = load_library(library.read_bytes(), str(library))
    ffi, c_predict = native.ffi, native.lib.edgeboost_predict
    width = len(names)
    out = ffi.new(f"float[{manifest.num_output}]")
    buffers = [ffi.new("float[]", row.tolist()) for row in rows]

    def raw(buffer: Any) -> None:
        c_predict(buffer, 1, width, 0, out)

    lists = [[row] for row in rows.tolist()]
    return {
        "cffi": (raw, buffers, native),  # native: keeps the library loaded
        "numpy": (model.predict, [rows[i : i + 1] for i in range(len(rows))], model),
        "list": (model.predict, lists, model),
        "dict": (model.predict, _records(rows, names), model),
        "dict-complete": (model.predict, _records(complete, names), model),
        "noop": (id, lists, None),
    }


def _calls(predict: Callable[[Any], Any], inputs: Sequence[Any], config: BenchConfig) -> int:
    """Calls per measurement: about ``measure_seconds`` of them, after a warm-up."""
    probe = min(len(inputs), 200)
    started = time.perf_counter()
    for i in range(probe):
        predict(inputs[i])
    per_call = max((time.perf_counter() - started) / probe, 1e-8)
    return int(min(config.max_calls, max(100, config.measure_seconds / per_call)))


def measure_overhead(
    case: ModelCase,
    bundle: Path,
    backend: str,
    config: BenchConfig,
    work: Path,
    *,
    say: Callable[[str], None] = print,
) -> OneRowOverhead:
    from edgeboost.compile.emulation import write_rows
    from edgeboost.runtime.manifest import Manifest
    from edgeboost.runtime.targets import host_target

    rows = timing_rows(case, DISTINCT_ROWS)
    candidates = timing_rows(case, 64 * DISTINCT_ROWS, seed=2)
    complete = candidates[~np.isnan(candidates).any(axis=1)][:DISTINCT_ROWS]
    library = bundle / Manifest.read(bundle).targets[host_target()].file
    folder = work / "overhead" / case.key
    binary = build_harness(library, folder / "c_bench")
    rows_file = folder / "rows.bin"
    write_rows(rows_file, rows)

    ways = _python_ways(bundle, rows, complete, case.feature_names)
    calls = {way: _calls(predict, inputs, config) for way, (predict, inputs, _) in ways.items()}
    calls["c"] = config.max_calls
    order = [way for way in WAYS if way in calls]
    measured: dict[str, list[Measurement]] = {way: [] for way in order}
    for round_index in range(config.repeats):
        start = round_index % len(order)
        for way in order[start:] + order[:start]:
            if way == "c":
                measured[way].append(run_harness(binary, rows_file, 1, calls[way]))
            else:
                predict, inputs, _ = ways[way]
                measured[way].append(time_calls(predict, inputs, 1, calls[way]))
    p50 = {
        way: float(np.percentile(np.concatenate([m.per_call_ns for m in ms]), 50)) / 1e3
        for way, ms in measured.items()
    }
    figures = {
        way: OneRowCall(
            way=way,
            label=WAYS[way],
            p50_us=p50[way],
            round_p50_us=round_p50s_us(measured[way]),
            overhead_us=None if way in ("c", "noop") else p50[way] - p50["c"],
            calls_per_round=calls[way],
        )
        for way in order
    }
    say(
        f"  {case.key}: one row, p50 µs "
        + ", ".join(f"{way} {figures[way].p50_us:.2f}" for way in order)
    )
    return OneRowOverhead(
        backend=backend,
        rounds=config.repeats,
        distinct_rows=len(rows),
        calls=figures,
        target=ONE_ROW_OVERHEAD,
        met={way: ONE_ROW_OVERHEAD.met(figures[way].overhead_us) for way in JUDGED_WAYS},
    )

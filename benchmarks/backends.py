"""The two edgeboost backends side by side, and the issue's targets, from one run's results.

``backend_summary`` reads what the run measured (timing, builds) and returns what results.json
holds under "backends": per model and backend the figures the issue names, the ratios of the
kernel backend to the tl2cgen backend, to XGBoost on one thread and to TL2cgen's own predictor,
and each target with its verdict (met, not met, or not measured), computed from those figures
(medians; the best round is shown beside them, not judged).
Nothing here measures; a figure that the run did not measure is None.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgeboost.runtime.targets import TARGETS

from .config import WINE_SHAPED
from .engines import TL2CGEN_PREDICTOR, XGBOOST_ONE_THREAD, edgeboost_key

__all__ = [
    "BACKEND_ENGINES",
    "ISSUE_TARGETS",
    "PEER_ENGINES",
    "IssueTarget",
    "backend_summary",
]

# The engines each backend's figures come from: from Python (numpy rows) and from C.
BACKEND_ENGINES: dict[str, dict[str, str]] = {
    backend: {"python": edgeboost_key(backend, "numpy"), "c": edgeboost_key(backend, "c")}
    for backend in ("tl2cgen", "kernel")
}
# The peers the kernel is compared with, from Python: XGBoost on one thread is the fair
# single-core reference; TL2cgen's own predictor (export_lib) is the code generator's.
PEER_ENGINES: dict[str, str] = {
    "xgboost": XGBOOST_ONE_THREAD,
    "tl2cgen_predictor": TL2CGEN_PREDICTOR,
}
# Figures where lower is better (the others: higher is better).
LOWER_IS_BETTER = frozenset(
    {
        "python_p50_us",
        "c_p50_us",
        "compile_all_targets_s",
        "compiler_all_targets_s",
        "library_bytes",
    }
)
# The targets "compile of all three targets" adds up.
ALL_TARGETS = tuple(TARGETS)


@dataclass(frozen=True, slots=True)
class IssueTarget:
    """A figure the issue sets a limit for, on one model."""

    model: str
    figure: str
    what: str
    limit: float
    unit: str

    @property
    def lower_is_better(self) -> bool:
        return self.figure in LOWER_IS_BETTER

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value <= self.limit if self.lower_is_better else value >= self.limit


# "Benchmark (same run, same machine): single-row p50 from Python <= 3 us for the wine-shaped
# 400x6 model, batch >= 600k rows per CPU-second on one core, compile of all three targets
# <= 10 s; the report shows both backends and the ratio to TL2cgen and to XGBoost."
ISSUE_TARGETS: tuple[IssueTarget, ...] = (
    IssueTarget(WINE_SHAPED.key, "python_p50_us", "single-row p50 from Python", 3.0, "µs"),
    IssueTarget(
        WINE_SHAPED.key,
        "python_rows_per_cpu_s",
        "batch rows per CPU-second on one core (from Python, largest batch)",
        600_000.0,
        "rows/CPU-s",
    ),
    IssueTarget(
        WINE_SHAPED.key,
        "compile_all_targets_s",
        "compile of all three targets (wall seconds, added up)",
        10.0,
        "s",
    ),
)


def _timing(model: dict[str, Any], key: str, batch: int) -> dict[str, Any] | None:
    entry = model.get("timing", {}).get(key, {}).get(str(batch))
    return entry if entry and "error" not in entry else None


def _p50(model: dict[str, Any], key: str) -> float | None:
    entry = _timing(model, key, 1)
    return float(entry["call_us"]["p50"]) if entry else None


def _best_round_p50(model: dict[str, Any], key: str) -> float | None:
    """The lowest of the rounds' p50 latencies for one row (None in results from before it
    was recorded)."""
    entry = _timing(model, key, 1)
    best = entry.get("round_p50_us", {}).get("min") if entry else None
    return float(best) if best is not None else None


def _best_round_rate(model: dict[str, Any], key: str, batch: int) -> float | None:
    entry = _timing(model, key, batch)
    return float(entry["rows_per_cpu_s"]["max"]) if entry else None


def _bulk(model: dict[str, Any], key: str, batch: int) -> tuple[float | None, float | None]:
    """Rows per CPU-second (median over rounds) and CPU-seconds per wall second."""
    entry = _timing(model, key, batch)
    if not entry:
        return None, None
    return float(entry["rows_per_cpu_s"]["median"]), float(entry["cpu_per_wall"])


def _backend_figures(model: dict[str, Any], backend: str, largest: int) -> dict[str, Any]:
    engines = BACKEND_ENGINES[backend]
    python_rate, python_threads = _bulk(model, engines["python"], largest)
    c_rate, c_threads = _bulk(model, engines["c"], largest)
    figures: dict[str, Any] = {
        "python_p50_us": _p50(model, engines["python"]),
        # The target figures' best rounds: this shared machine's co-tenants move medians by
        # a third; the best round is what the code does when they are quiet.
        "python_p50_us_best_round": _best_round_p50(model, engines["python"]),
        "python_rows_per_cpu_s_best_round": _best_round_rate(model, engines["python"], largest),
        "c_p50_us": _p50(model, engines["c"]),
        "python_rows_per_cpu_s": python_rate,
        "python_cpu_per_wall": python_threads,
        "c_rows_per_cpu_s": c_rate,
        "c_cpu_per_wall": c_threads,
        "compile_wall_s": {},
        "compiler_s": {},
        "compile_all_targets_s": None,
        "compiler_all_targets_s": None,
        "library_bytes": None,
        "library_bytes_per_target": {},
        "host_target": None,
    }
    build = model.get("builds", {}).get(backend)
    if not build or not build.get("targets"):
        return figures
    targets = build["targets"]
    figures["compile_wall_s"] = {t: b["compile_wall_seconds"] for t, b in targets.items()}
    figures["compiler_s"] = {t: b["compiler_seconds"] for t, b in targets.items()}
    figures["library_bytes_per_target"] = {t: b["library_bytes"] for t, b in targets.items()}
    # The host target is always compiled first (benchmarks.build.build_model).
    host = next(iter(targets))
    figures["host_target"] = host
    figures["library_bytes"] = targets[host]["library_bytes"]
    if all(t in targets for t in ALL_TARGETS):
        figures["compile_all_targets_s"] = round(
            sum(targets[t]["compile_wall_seconds"] for t in ALL_TARGETS), 2
        )
        figures["compiler_all_targets_s"] = round(
            sum(targets[t]["compiler_seconds"] for t in ALL_TARGETS), 2
        )
    return figures


def _peer_figures(model: dict[str, Any], key: str, largest: int) -> dict[str, Any]:
    rate, threads = _bulk(model, key, largest)
    return {
        "engine": key,
        "python_p50_us": _p50(model, key),
        "python_rows_per_cpu_s": rate,
        "python_cpu_per_wall": threads,
    }


_RATIO_FIGURES = (
    "python_p50_us",
    "c_p50_us",
    "python_rows_per_cpu_s",
    "c_rows_per_cpu_s",
    "compile_all_targets_s",
    "compiler_all_targets_s",
    "library_bytes",
)


def _ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """ours / theirs for every figure both have (below 1 is better where lower is better)."""
    out = {}
    for figure in _RATIO_FIGURES:
        a, b = ours.get(figure), theirs.get(figure)
        if a is not None and b:
            out[figure] = a / b
    return out


def backend_summary(results: dict[str, Any]) -> dict[str, Any]:
    """What results.json holds under "backends" (see the module docstring)."""
    largest = max(results["config"]["batch_sizes"])
    models: dict[str, Any] = {}
    for model_key, model in results["models"].items():
        entry: dict[str, Any] = {
            backend: _backend_figures(model, backend, largest) for backend in BACKEND_ENGINES
        }
        for name, key in PEER_ENGINES.items():
            entry[name] = _peer_figures(model, key, largest)
        kernel = entry["kernel"]
        entry["ratios"] = {
            "kernel/tl2cgen": _ratios(kernel, entry["tl2cgen"]),
            "kernel/xgboost": _ratios(kernel, entry["xgboost"]),
            "kernel/tl2cgen_predictor": _ratios(kernel, entry["tl2cgen_predictor"]),
        }
        models[model_key] = entry
    targets = []
    for target in ISSUE_TARGETS:
        model = models.get(target.model)
        measured = {
            backend: (model[backend][target.figure] if model else None)
            for backend in BACKEND_ENGINES
        }
        best_round = {
            backend: (model[backend].get(f"{target.figure}_best_round") if model else None)
            for backend in BACKEND_ENGINES
        }
        targets.append(
            {
                **asdict(target),
                "lower_is_better": target.lower_is_better,
                "measured": measured,
                "best_round": best_round,  # None where the figure has no rounds (compile)
                "met": {backend: target.met(value) for backend, value in measured.items()},
            }
        )
    return {
        "largest_batch": largest,
        "engines": BACKEND_ENGINES,
        "peers": PEER_ENGINES,
        "all_targets": list(ALL_TARGETS),
        "models": models,
        "issue_targets": targets,
    }

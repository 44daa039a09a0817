"""The two edgeboost backends side by side, and the backend targets judged, from one run.

``compare_backends`` reads what the run measured (timing, builds) and returns what
results.json holds under "backends": per model and backend the figures the targets and the
report's "Backends" section use, the ratios of the kernel backend to the tl2cgen backend, to
XGBoost on one thread and to TL2cgen's own predictor, and each target of
``performance_targets.BACKEND_TARGETS`` with its verdict per backend.
Nothing here measures; a figure that the run did not measure is None.
"""

from __future__ import annotations

from edgeboost.compile import BACKENDS
from edgeboost.runtime.targets import TARGETS

from .engines import TL2CGEN_PREDICTOR, XGBOOST_ONE_THREAD, edgeboost_key
from .performance_targets import BACKEND_TARGETS
from .results import (
    BackendComparison,
    BackendEngines,
    BackendFigures,
    ModelComparison,
    ModelResults,
    PeerFigures,
    RunResults,
    TargetVerdict,
)

__all__ = ["BACKEND_ENGINES", "LOWER_IS_BETTER", "PEER_ENGINES", "compare_backends"]

# The engines each backend's figures come from (names from the engine table's scheme), the
# default backend first.
BACKEND_ENGINES: dict[str, BackendEngines] = {
    backend: BackendEngines(python=edgeboost_key(backend, "numpy"), c=edgeboost_key(backend, "c"))
    for backend in BACKENDS
}
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
# The figures a ratio is given for.
RATIO_FIGURES = (
    "python_p50_us",
    "c_p50_us",
    "python_rows_per_cpu_s",
    "c_rows_per_cpu_s",
    "compile_all_targets_s",
    "compiler_all_targets_s",
    "library_bytes",
)
# The targets "compile of every target" adds up.
ALL_TARGETS = tuple(TARGETS)


def _p50(model: ModelResults, key: str) -> float | None:
    entry = model.timing_of(key, 1)
    return entry.call_us.p50 if entry else None


def _best_round_p50(model: ModelResults, key: str) -> float | None:
    entry = model.timing_of(key, 1)
    return entry.round_p50_us.min if entry else None


def _rate(model: ModelResults, key: str, batch: int) -> float | None:
    entry = model.timing_of(key, batch)
    return entry.rows_per_cpu_s.median if entry else None


def _best_round_rate(model: ModelResults, key: str, batch: int) -> float | None:
    entry = model.timing_of(key, batch)
    return entry.rows_per_cpu_s.max if entry else None


def _threads(model: ModelResults, key: str, batch: int) -> float | None:
    entry = model.timing_of(key, batch)
    return entry.cpu_per_wall if entry else None


def _backend_figures(model: ModelResults, backend: str, largest: int) -> BackendFigures:
    engines = BACKEND_ENGINES[backend]
    build = model.builds.get(backend)
    targets = build.targets if build else {}
    host = next(iter(targets), None)  # the host target is always compiled first
    every = all(t in targets for t in ALL_TARGETS)
    return BackendFigures(
        python_p50_us=_p50(model, engines.python),
        python_p50_us_best_round=_best_round_p50(model, engines.python),
        python_rows_per_cpu_s=_rate(model, engines.python, largest),
        python_rows_per_cpu_s_best_round=_best_round_rate(model, engines.python, largest),
        python_cpu_per_wall=_threads(model, engines.python, largest),
        c_p50_us=_p50(model, engines.c),
        c_rows_per_cpu_s=_rate(model, engines.c, largest),
        c_cpu_per_wall=_threads(model, engines.c, largest),
        compile_wall_s={t: b.compile_wall_seconds for t, b in targets.items()},
        compiler_s={t: b.compiler_seconds for t, b in targets.items()},
        compile_all_targets_s=(
            sum(targets[t].compile_wall_seconds for t in ALL_TARGETS) if every else None
        ),
        compiler_all_targets_s=(
            sum(targets[t].compiler_seconds for t in ALL_TARGETS) if every else None
        ),
        library_bytes=targets[host].library_bytes if host else None,
        library_bytes_per_target={t: b.library_bytes for t, b in targets.items()},
        host_target=host,
    )


def _peer_figures(model: ModelResults, key: str, largest: int) -> PeerFigures:
    return PeerFigures(
        engine=key,
        python_p50_us=_p50(model, key),
        python_rows_per_cpu_s=_rate(model, key, largest),
        python_cpu_per_wall=_threads(model, key, largest),
    )


def _ratios(ours: BackendFigures, theirs: BackendFigures | PeerFigures) -> dict[str, float]:
    """ours / theirs for every figure both have (below 1 is better where lower is better)."""
    out = {}
    for figure in RATIO_FIGURES:
        a, b = ours.figure(figure), theirs.figure(figure)
        if a is not None and b:
            out[figure] = a / b
    return out


def compare_backends(results: RunResults) -> BackendComparison:
    """What results.json holds under "backends" (see the module docstring)."""
    largest = results.largest_batch
    models: dict[str, ModelComparison] = {}
    for model_key, model in results.models.items():
        backends = {b: _backend_figures(model, b, largest) for b in BACKEND_ENGINES}
        peers = {name: _peer_figures(model, key, largest) for name, key in PEER_ENGINES.items()}
        kernel = backends["kernel"]
        models[model_key] = ModelComparison(
            backends=backends,
            peers=peers,
            ratios={
                "kernel/tl2cgen": _ratios(kernel, backends["tl2cgen"]),
                "kernel/xgboost": _ratios(kernel, peers["xgboost"]),
                "kernel/tl2cgen_predictor": _ratios(kernel, peers["tl2cgen_predictor"]),
            },
        )
    verdicts = []
    for target in BACKEND_TARGETS:
        compared = models.get(target.model or "")
        measured = {
            b: compared.backends[b].figure(target.figure) if compared else None
            for b in BACKEND_ENGINES
        }
        best_round = {
            b: compared.backends[b].figure(f"{target.figure}_best_round") if compared else None
            for b in BACKEND_ENGINES
        }
        verdicts.append(
            TargetVerdict(
                target=target,
                measured=measured,
                best_round=best_round,
                met={b: target.met(v) for b, v in measured.items()},
            )
        )
    return BackendComparison(
        largest_batch=largest,
        engines=BACKEND_ENGINES,
        peers=PEER_ENGINES,
        all_targets=ALL_TARGETS,
        models=models,
        targets=tuple(verdicts),
    )

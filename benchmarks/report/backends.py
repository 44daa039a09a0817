"""The "Backends" section: the kernel and tl2cgen backends side by side, the ratios to the
peers, and the backend targets with their verdicts."""

from __future__ import annotations

from ..backend_comparison import LOWER_IS_BETTER, compare_backends
from ..results import BackendComparison, ModelComparison, RunResults, TargetVerdict
from .text import code, factor, num, short_triple, table

__all__ = ["backends_section"]


def _value(figure: str, value: float | None) -> str:
    if value is None:
        return "—"
    if figure == "library_bytes":
        return f"{value / 1024:,.0f}"
    if figure.endswith("_s") and not figure.endswith("cpu_s"):
        return f"{value:.1f}"
    return num(value)


def _ratio_cell(figure: str, ratio: float | None) -> str:
    """kernel / other, and what it means: '0.21 (4.76x faster)'."""
    if ratio is None:
        return "—"
    if figure in LOWER_IS_BETTER:
        good, bad = ("smaller", "larger") if figure == "library_bytes" else ("faster", "slower")
        phrase = f"{factor(1 / ratio)}x {good}" if ratio <= 1 else f"{factor(ratio)}x {bad}"
    else:
        phrase = f"{factor(ratio)}x more" if ratio >= 1 else f"{factor(1 / ratio)}x fewer"
    return f"{ratio:.3g} ({phrase})"


def _verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[met]


def _targets_table(comparison: BackendComparison, verdicts: tuple[TargetVerdict, ...]) -> list[str]:
    rows = []
    for verdict in verdicts:
        target = verdict.target
        cells = [target.wording]
        for backend in comparison.engines:
            value = verdict.measured.get(backend)
            cell = _verdict(verdict.met.get(backend))
            if value is not None:
                cell = f"{_value(target.figure, value)} {target.unit}: {cell}"
            best = verdict.best_round.get(backend)
            if best is not None:
                cell += f" (best round {_value(target.figure, best)})"
            cells.append(cell)
        rows.append(cells)
    return table(["target", *[f"{b} backend" for b in comparison.engines]], rows)


def _model_table(
    results: RunResults, comparison: BackendComparison, entry: ModelComparison
) -> list[str]:
    largest = comparison.largest_batch
    triples = " / ".join(short_triple(t) for t in comparison.all_targets)
    figures_shown = (
        ("python_p50_us", "single row p50 from Python, µs"),
        ("c_p50_us", "single row p50 from C, µs"),
        ("python_rows_per_cpu_s", f"rows per CPU-second at {num(largest)} rows, from Python"),
        ("c_rows_per_cpu_s", f"rows per CPU-second at {num(largest)} rows, from C"),
        ("compile_all_targets_s", f"compile, every target ({triples}), s"),
        ("library_bytes", "library KiB on this machine's target"),
    )
    rows = []
    for figure, title in figures_shown:
        cells = [title]
        for backend in ("tl2cgen", "kernel"):
            figures = entry.backends[backend]
            cell = _value(figure, figures.figure(figure))
            if figure == "compile_all_targets_s":
                if figures.compiler_all_targets_s is not None:
                    cell += f" [{figures.compiler_all_targets_s:.1f}]"
                elif figures.compile_wall_s:
                    built = ", ".join(
                        f"{short_triple(t)} {s:.1f}" for t, s in figures.compile_wall_s.items()
                    )
                    cell = f"— (built: {built})"
            cells.append(cell)
        cells.append(_ratio_cell(figure, entry.ratios["kernel/tl2cgen"].get(figure)))
        for peer, ratio_key in (
            ("xgboost", "kernel/xgboost"),
            ("tl2cgen_predictor", "kernel/tl2cgen_predictor"),
        ):
            cells.append(_value(figure, entry.peers[peer].figure(figure)))
            cells.append(_ratio_cell(figure, entry.ratios[ratio_key].get(figure)))
        rows.append(cells)
    xgboost, predictor = (code(comparison.peers[name]) for name in ("xgboost", "tl2cgen_predictor"))
    header = [
        "figure",
        "tl2cgen backend",
        "kernel backend",
        "kernel / tl2cgen",
        xgboost,
        "kernel / XGBoost",
        predictor,
        "kernel / TL2cgen's predictor",
    ]
    out = table(header, rows)
    sizes = []
    for backend, figures in entry.backends.items():
        if figures.library_bytes_per_target:
            listed = ", ".join(
                f"{short_triple(t)} {b / 1024:,.0f}"
                for t, b in figures.library_bytes_per_target.items()
            )
            sizes.append(f"{backend} {listed}")
    if sizes:
        out += ["", f"Library KiB per target: {'; '.join(sizes)}."]
    return out


def backends_section(results: RunResults) -> list[str]:
    comparison = results.backends or compare_backends(results)
    engines = comparison.engines
    triples = " / ".join(short_triple(t) for t in comparison.all_targets)
    out = ["## Backends: kernel and tl2cgen", ""]
    out.append(
        "Protocol: the figures of the sections below, for edgeboost's two backends, from the same "
        "run on the same machine. From Python: the edgeboost runtime with numpy rows "
        f"(`{engines['kernel'].python}`, `{engines['tl2cgen'].python}`); from C: the c_bench "
        f"harness (`{engines['kernel'].c}`, `{engines['tl2cgen'].c}`). Throughput: rows per "
        f"CPU-second at {comparison.largest_batch:,} rows per call; the runtime and the harness "
        "run on one thread, so this is one core's rate, and the fair XGBoost figure is "
        "`inplace_predict` with nthread=1. Compile: the wall times of the per-target compiles "
        f"({triples}) added up, each as `edgeboost compile --target T` (the host one includes "
        "its parity check against XGBoost); compiler-seconds in brackets. Ratios are kernel "
        "divided by the other: below 1 is better for times and sizes, above 1 for rows per "
        "CPU-second."
    )
    out.append("")
    by_model: dict[str, list[TargetVerdict]] = {}
    for verdict in comparison.targets:
        by_model.setdefault(verdict.target.model or "", []).append(verdict)
    for model_key, verdicts in by_model.items():
        out.append(f"### Targets, on the wine-shaped model {model_key}")
        out.append("")
        out.append(
            "Judged on the figures of the whole run (p50 over every call of every round, median "
            "round for throughput); the best round, in brackets, is what the code does while "
            "this shared machine's co-tenants are quiet, and is not judged."
        )
        out.append("")
        out += _targets_table(comparison, tuple(verdicts))
        out.append("")
    for model_key, entry in comparison.models.items():
        if not any(figures.host_target for figures in entry.backends.values()):
            continue
        out += [f"### {model_key}", "", *_model_table(results, comparison, entry), ""]
    return out

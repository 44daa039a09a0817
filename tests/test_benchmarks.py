"""Smoke-run of the benchmark CLI with tiny numbers (as argon2 runs its benchmark CLI in tox).

One run: the shipped wine model for this machine only (both backends), a few rows, one round,
a few engines, serving with a handful of requests. It checks what the run writes, not how fast
anything is; parity is checked for real (bit-exact or the command fails).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeboost.benchmarks.results import RunResults

from .conftest import need

ENGINES = (
    "xgboost-inplace-1t",
    "onedal",
    "edgeboost-kernel-numpy",
    "edgeboost-kernel-array",
    "edgeboost-kernel-dicts",
    "edgeboost-tl2cgen-numpy",
)
EDGEBOOST = (
    "edgeboost-kernel-numpy",
    "edgeboost-kernel-array",
    "edgeboost-kernel-dicts",
    "edgeboost-kernel-c",
    "edgeboost-tl2cgen-numpy",
    "edgeboost-tl2cgen-c",
)
TINY = [
    "--no-synthetic",
    "--target",
    "host",
    "--batch-sizes",
    "1,10",
    "--repeats",
    "1",
    "--measure-seconds",
    "0.002",
    "--parity-rows",
    "1000",
    "--coldstart-repeats",
    "1",
    "--serving-requests",
    "5",
    "--serving-seconds",
    "0.3",
]


@dataclass(frozen=True)
class Smoke:
    code: int
    out: Path
    results: dict[str, Any]  # results.json
    run: RunResults  # what the report was rendered from


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Smoke:
    need(importlib.util.find_spec("matplotlib") is not None, "matplotlib (edgeboost[bench])")
    from edgeboost.benchmarks import runner
    from edgeboost.benchmarks.cli import main

    out = tmp_path_factory.mktemp("bench")
    engines = [
        arg
        for key in (*ENGINES, "edgeboost-kernel-c", "edgeboost-tl2cgen-c")
        for arg in ("--engine", key)
    ]
    runs: list[RunResults] = []
    measure = runner.run_benchmark

    def keep(*args: Any, **kwargs: Any) -> tuple[RunResults, list[str]]:
        results, failures = measure(*args, **kwargs)
        runs.append(results)
        return results, failures

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "run_benchmark", keep)
        code = main(["-o", str(out), "--work", str(out / "work"), *TINY, *engines])
    return Smoke(code, out, json.loads((out / "results.json").read_text()), runs[0])


def test_the_run_writes_results_report_and_plots(smoke: Smoke) -> None:
    assert smoke.code == 0, smoke.results.get("parity_failures")
    for name in ("latency.png", "throughput.png", "memory.png", "size.png"):
        size = (smoke.out / name).stat().st_size
        assert 1_000 < size < 200_000, (name, size)
    report = (smoke.out / "REPORT.md").read_text()
    for heading in (
        "## Summary",
        "## Engines",
        "## Backends: kernel and tl2cgen",
        "## Parity with XGBoost",
        "## Serving",
        "## Host and versions",
    ):
        assert heading in report
    assert "Protocol:" in report
    results = smoke.results
    assert results["host"]["logical_cores"] >= 1 and results["versions"]["xgboost-cpu"]
    wine = results["models"]["wine-quality"]
    runnable = {k for k, e in results["engines"].items() if not e["unavailable"]}
    assert set(wine["timing"]) == runnable
    assert runnable >= {*EDGEBOOST, "xgboost-inplace-1t"}
    single = wine["timing"]["edgeboost-kernel-c"]["1"]
    assert single["call_us"]["p50"] > 0 and single["rows_per_cpu_s"]["median"] > 0
    assert wine["startup"]["edgeboost-kernel-array"]["peak_rss_mib"] > 1
    for backend in ("tl2cgen", "kernel"):
        built = next(iter(wine["builds"][backend]["targets"].values()))
        assert built["library_bytes"] > 0 and built["zip_bytes"] > 0
        assert "bundle" not in built  # a path into the run's scratch folder


def test_every_engine_key_names_the_backend_it_loads(smoke: Smoke) -> None:
    """In results.json, the report's tables and the plots alike: an edgeboost key without its
    backend once meant the tl2cgen backend while the kernel is the default."""
    engines = smoke.results["engines"]
    for key, engine in engines.items():
        if engine["family"] == "edgeboost":
            assert key == f"edgeboost-{engine['backend']}-{engine['form']}", key
    report = (smoke.out / "REPORT.md").read_text()
    for key in smoke.results["models"]["wine-quality"]["timing"]:
        assert f"| `{key}` |" in report, key
    assert "the issue" not in report.lower()


def test_onedal_is_compared_and_timed_like_the_other_engines(smoke: Smoke) -> None:
    need(importlib.util.find_spec("daal4py") is not None, "daal4py (edgeboost[bench])")
    wine = smoke.results["models"]["wine-quality"]
    parity = wine["parity"]["onedal"]
    assert "error" not in parity, parity
    # A regression model: its predictions are margins, compared bit for bit.
    assert parity["rows"] == 1000 and parity["margin_mismatched_rows"] is not None
    assert parity["max_abs_margin_diff"] < 1e-4  # a converted model, not another one
    assert parity["one_row_calls"]["rows"] == 1000
    for batch in ("1", "10"):
        assert wine["timing"]["onedal"][batch]["call_us"]["p50"] > 0
    assert wine["startup"]["onedal"]["peak_rss_mib"] > 1
    assert smoke.results["versions"]["daal4py"]


def test_the_one_row_overhead_of_python_is_measured_and_judged(smoke: Smoke) -> None:
    from edgeboost.benchmarks.overhead import JUDGED_WAYS, WAYS
    from edgeboost.benchmarks.performance_targets import ONE_ROW_OVERHEAD
    from edgeboost.compile import DEFAULT_BACKEND

    overhead = smoke.results["models"]["wine-quality"]["overhead"]
    assert "error" not in overhead, overhead
    assert overhead["backend"] == DEFAULT_BACKEND
    calls = overhead["calls"]
    assert list(calls) == list(WAYS)
    c = calls["c"]["p50_us"]
    assert c > 0
    for way in JUDGED_WAYS:
        figures = calls[way]
        assert figures["overhead_us"] == pytest.approx(figures["p50_us"] - c)
        assert overhead["met"][way] == ONE_ROW_OVERHEAD.met(figures["overhead_us"])
    report = (smoke.out / "REPORT.md").read_text()
    assert ONE_ROW_OVERHEAD.wording in report
    table = report.split("## One-row call", 1)[1].split("\n## ", 1)[0]
    for way in JUDGED_WAYS:
        assert f"| {calls[way]['overhead_us']:.2f} |" in table, way


def test_the_backends_section_shows_both_side_by_side(smoke: Smoke) -> None:
    results = smoke.results
    backends = results["backends"]
    wine = backends["models"]["wine-quality"]
    for backend, engines in backends["engines"].items():
        assert {engines["python"], engines["c"]} <= set(results["engines"]), backend
        figures = wine["backends"][backend]
        for figure in ("python_p50_us", "c_p50_us", "python_rows_per_cpu_s", "c_rows_per_cpu_s"):
            assert figures[figure] > 0, (backend, figure)
        assert figures["python_p50_us"] == pytest.approx(
            results["models"]["wine-quality"]["timing"][engines["python"]]["1"]["call_us"]["p50"]
        )
        assert figures["library_bytes"] > 0 and figures["compile_wall_s"]
        # Only this machine's target was compiled: no all-targets figure.
        assert figures["compile_all_targets_s"] is None
    xgboost = wine["peers"]["xgboost"]
    assert xgboost["engine"] in results["engines"] and xgboost["python_p50_us"] > 0
    ratios = wine["ratios"]
    assert ratios["kernel/tl2cgen"]["python_p50_us"] == pytest.approx(
        wine["backends"]["kernel"]["python_p50_us"] / wine["backends"]["tl2cgen"]["python_p50_us"]
    )
    assert set(ratios["kernel/xgboost"]) == {"python_p50_us", "python_rows_per_cpu_s"}
    # The targets are set on the 400x6 model, which this run leaves out: none is judged.
    assert backends["targets"] and all(
        set(t["met"].values()) == {None} for t in backends["targets"]
    )
    assert "kernel / XGBoost" in (smoke.out / "REPORT.md").read_text()


def test_parity_is_present_and_exact(smoke: Smoke) -> None:
    wine = smoke.results["models"]["wine-quality"]
    for key in EDGEBOOST:
        report = wine["parity"][key]
        assert report["rows"] == 1000
        assert report["exact"] and report["margin_mismatched_rows"] == 0, (key, report)
        assert report["max_abs_margin_diff"] == 0
        if not key.endswith("-c"):  # the C harness's driver takes batches only
            assert report["one_row_calls"]["exact"], (key, report["one_row_calls"])
    # This machine's library is covered by the C engines (same library, same parity driver).
    assert wine["target_parity"] == {"tl2cgen": {}, "kernel": {}}
    assert smoke.results["parity_failures"] == []
    assert "bit-exact with XGBoost" in (smoke.out / "REPORT.md").read_text()


def test_serving_was_measured(smoke: Smoke) -> None:
    need(importlib.util.find_spec("awsiot") is not None, "awsiotsdk (pip install awsiotsdk)")
    serving = smoke.results["serving"]
    assert "error" not in serving, serving
    transports = serving["transports"]
    assert (
        set(transports) == {"builtin", "awsiotsdk"} and serving["default_transport"] in transports
    )
    for name, figures in transports.items():
        assert figures["round_trips"] == 5 and figures["round_trip_ms"]["p50"] > 0
        assert figures["exit_codes"] == {"server": 0, "broker": 0}
        assert figures["transport"] == name
        assert figures["server_threads"] >= 2 and figures["server_rss_after_mib"] > 5
    assert transports["builtin"]["server_threads"] <= 3  # main, worker, IPC
    assert "### Transports" in (smoke.out / "REPORT.md").read_text()


def test_a_parity_failure_fails_the_command(
    smoke: Smoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from edgeboost.benchmarks import cli, runner

    failure = "wine-quality: edgeboost-kernel-numpy is not bit-exact"
    results = replace(smoke.run, parity_failures=[failure])
    monkeypatch.setattr(runner, "run_benchmark", lambda *a, **k: (results, [failure]))
    assert cli.main(["-o", str(tmp_path), "--no-plots"]) == 1
    assert f"**Parity FAILED:** {failure}" in (tmp_path / "REPORT.md").read_text()


def test_compare_sees_one_ulp() -> None:
    from edgeboost.benchmarks.parity import compare

    reference = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    nudged = reference.copy()
    nudged[1] = np.nextafter(nudged[1], np.float32(0))
    same = compare(reference, reference, reference, reference)
    assert same.exact and same.max_ulp_margin == 0
    off = compare(nudged, nudged, reference, reference)
    assert not off.exact
    assert off.margin_mismatched_rows == 1 and off.max_ulp_margin == 1
    assert off.max_abs_margin_diff == pytest.approx(abs(float(nudged[1]) - float(reference[1])))
    assert compare(None, reference, reference, reference).exact is False  # no margins


def test_one_row_calls_are_checked_apart_from_the_batch() -> None:
    """An engine that predicts small batches another way (oneDAL sums in another order for
    them) is exact in one call for all rows and not one row per call; the run sees both."""
    from edgeboost.benchmarks.engines import Engine, Session
    from edgeboost.benchmarks.parity import Reference, engine_parity
    from edgeboost.benchmarks.runner import _exact

    reference = Reference.__new__(Reference)
    reference.rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    reference.margin = reference.value = reference.rows.sum(axis=1)
    reference.finite_rows = np.ones(6, dtype=bool)

    class OtherwiseForOneRow(Session):
        def outputs(self, rows: Any) -> tuple[Any, Any]:
            out = rows.sum(axis=1).astype(np.float32)
            if len(rows) == 1:
                out = np.nextafter(out, np.float32(np.inf))
            return out, out

    report = engine_parity(Engine(), OtherwiseForOneRow(), reference, 4)
    assert report.exact and report.one_row_calls is not None
    assert not report.one_row_calls.exact and report.one_row_calls.margin_mismatched_rows == 4
    assert not _exact(report)
    assert _exact(engine_parity(Engine(), OtherwiseForOneRow(), reference, 0))


def test_the_synthetic_model_is_the_same_every_run(tmp_path: Path) -> None:
    from edgeboost.benchmarks.config import SyntheticSpec
    from edgeboost.benchmarks.models import train_synthetic

    spec = SyntheticSpec(trees=4, depth=3, features=6, rows=400)
    first = train_synthetic(spec, tmp_path / "a")
    second = train_synthetic(spec, tmp_path / "b")
    assert first.model_path.read_bytes() == second.model_path.read_bytes()
    assert (first.num_tree, first.max_depth, first.num_feature) == (4, 3, 6)
    assert first.objective == spec.objective


def test_a_regression_model_is_trained_too(tmp_path: Path) -> None:
    from edgeboost.benchmarks.config import SyntheticSpec
    from edgeboost.benchmarks.models import train_synthetic

    spec = SyntheticSpec(trees=3, depth=2, features=13, rows=300, objective="reg:squarederror")
    case = train_synthetic(spec, tmp_path)
    assert case.key == "synthetic-3x2" and case.objective == "reg:squarederror"
    assert case.num_feature == 13
    with pytest.raises(ValueError, match="unknown objective"):
        train_synthetic(SyntheticSpec(objective="multi:softprob"), tmp_path)


def test_both_presets_measure_what_the_performance_targets_judge() -> None:
    """Each preset compiles every backend compile knows, measures the model the targets are
    set on with the engines they read, and compiles the default backend for every target (the
    compile target adds all of them up)."""
    from edgeboost.benchmarks.backend_comparison import BACKEND_ENGINES
    from edgeboost.benchmarks.config import WINE_SHAPED, full_config, quick_config
    from edgeboost.benchmarks.engines import ENGINES
    from edgeboost.benchmarks.models import WINE_MODEL, load_case
    from edgeboost.benchmarks.performance_targets import BACKEND_TARGETS
    from edgeboost.compile import BACKENDS, DEFAULT_BACKEND

    # "Wine-shaped": as many features as the shipped model.
    assert WINE_SHAPED.features == load_case("wine-quality", WINE_MODEL).num_feature
    needed = {key for engines in BACKEND_ENGINES.values() for key in (engines.python, engines.c)}
    for config in (full_config(), quick_config()):
        assert set(config.backends) == set(BACKENDS), config.mode
        specs = {spec.key: spec for spec in config.synthetic}
        for target in BACKEND_TARGETS:
            spec = specs[target.model or ""]
            assert not spec.engines or needed <= set(spec.engines), (config.mode, spec.key)
            assert "all" in spec.targets and DEFAULT_BACKEND not in spec.host_only
        for spec in config.synthetic:
            assert set(spec.engines) <= set(ENGINES), spec.key
            assert set(spec.backends) | set(spec.host_only) <= set(config.backends), spec.key


def _fake_results(p50_us: float, rows_per_cpu_s: float, compile_s: float) -> RunResults:
    """A run that measured the 400x6 model's kernel backend only (and XGBoost on one thread)."""
    from edgeboost.benchmarks.config import WINE_SHAPED, quick_config
    from edgeboost.benchmarks.engines import XGBOOST_ONE_THREAD
    from edgeboost.benchmarks.results import (
        BackendBuild,
        HostFacts,
        ModelFacts,
        ModelResults,
        Percentiles,
        Spread,
        TargetBuild,
        TimingSummary,
    )
    from edgeboost.runtime.targets import TARGETS

    def timing(batch: int, p50: float, rate: float) -> TimingSummary:
        return TimingSummary(
            batch=batch,
            rounds=3,
            calls_per_round=10,
            rows_per_s=Spread(rate, rate, rate),
            rows_per_cpu_s=Spread(median=rate, min=rate * 0.8, max=rate * 1.25),
            call_us=Percentiles(p50=p50, p99=p50 * 2, min=p50 / 2, max=p50 * 3, calls=30),
            round_p50_us=Spread(median=p50, min=p50 * 0.8, max=p50 * 1.2),
            cpu_per_wall=1.0,
        )

    def built(triple: str) -> TargetBuild:
        return TargetBuild(triple, 1, True, 1, 1, compile_s / len(TARGETS), 1.0, "gcc", (), Path())

    model = ModelResults(
        model=ModelFacts(WINE_SHAPED.key, "m.json", "reg:squarederror", 400, 1, 13, 6, None),
        engines=[],
        engines_left_out={},
        builds={
            "kernel": BackendBuild(
                WINE_SHAPED.key, "kernel", "x86_64-linux-gnu", {t: built(t) for t in TARGETS}
            )
        },
        timing={
            "edgeboost-kernel-numpy": {
                1: timing(1, p50_us, 1e6 / p50_us),
                100: timing(100, 1.0, rows_per_cpu_s),
            },
            XGBOOST_ONE_THREAD: {1: timing(1, 300.0, 3e3), 100: timing(100, 30.0, 1e5)},
        },
    )
    config = replace(quick_config(), batch_sizes=(1, 100))
    host = HostFacts("cpu", 2, 2, 1.0, "x86_64", "6", "Linux", None, None, None)
    return RunResults("quick", config, host, {}, {}, models={WINE_SHAPED.key: model})


def test_the_backend_targets_are_judged_from_the_figures() -> None:
    from edgeboost.benchmarks.backend_comparison import compare_backends
    from edgeboost.benchmarks.performance_targets import BACKEND_TARGETS

    def run(p50: float, rate: float, compile_s: float) -> list[bool | None]:
        verdicts = compare_backends(_fake_results(p50, rate, compile_s)).targets
        assert [v.target for v in verdicts] == list(BACKEND_TARGETS)
        return [v.met["kernel"] for v in verdicts]

    limits = {t.figure: t.limit for t in BACKEND_TARGETS}
    p50, rate, compile_s = (
        limits["python_p50_us"],
        limits["python_rows_per_cpu_s"],
        limits["compile_all_targets_s"],
    )
    assert run(p50, rate, compile_s) == [True, True, True]  # the limits are included
    assert run(p50 * 0.9, rate * 1.1, compile_s * 0.9) == [True, True, True]
    assert run(p50 * 1.1, rate * 0.9, compile_s * 1.1) == [False, False, False]
    comparison = compare_backends(_fake_results(p50 * 1.1, rate * 0.9, compile_s * 1.1))
    assert [v.met["tl2cgen"] for v in comparison.targets] == [None, None, None]
    # The best round is reported beside the verdict, never judged.
    assert [v.best_round["kernel"] for v in comparison.targets] == [
        pytest.approx(p50 * 1.1 * 0.8),
        pytest.approx(rate * 0.9 * 1.25),
        None,
    ]
    ratios = comparison.models[next(iter(comparison.models))].ratios["kernel/xgboost"]
    assert ratios["python_p50_us"] == pytest.approx(p50 * 1.1 / 300.0)


def test_the_report_renders_a_run_and_states_each_target(tmp_path: Path) -> None:
    from edgeboost.benchmarks.backend_comparison import compare_backends
    from edgeboost.benchmarks.output import write_outputs
    from edgeboost.benchmarks.performance_targets import BACKEND_TARGETS

    results = _fake_results(2.0, 700_000, 20.0)
    results.backends = compare_backends(results)
    write_outputs(results, tmp_path, plots=False)
    report = (tmp_path / "REPORT.md").read_text()
    for target in BACKEND_TARGETS:
        assert target.wording in report
    assert "20.0 s: **not met**" in report and "**met**" in report
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["models"][BACKEND_TARGETS[0].model]["timing"]["edgeboost-kernel-numpy"]["1"]


def test_the_start_up_process_imports_only_the_standard_library() -> None:
    """The fresh process that measures an engine's import time and peak memory loads the
    engine table first: if that pulled in numpy or the runtime, every Python engine would
    show their cost (this happened once: 36 MiB and ~0 ms import for the no-numpy runtime)."""
    probe = (
        "import sys, edgeboost.benchmarks.coldstart, edgeboost.benchmarks.engines; "
        "print(' '.join(m for m in ('numpy', 'cffi', 'edgeboost.runtime', 'edgeboost.compile') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == []


def test_each_rounds_p50_is_summarised_beside_the_pooled_one() -> None:
    from edgeboost.benchmarks.measure import Measurement
    from edgeboost.benchmarks.timing import summarize

    def round_of(per_call_us: list[float]) -> Measurement:
        ns = [int(us * 1000) for us in per_call_us]
        return Measurement(batch=1, calls=len(ns), wall_ns=sum(ns), cpu_ns=sum(ns), per_call_ns=ns)

    # A quiet round and a noisy one: the pooled p50 sits between the rounds' p50s.
    summary = summarize([round_of([2.0, 2.0, 2.0, 9.0]), round_of([6.0, 6.0, 7.0, 7.0])])
    assert (summary.round_p50_us.median, summary.round_p50_us.min) == (4.25, 2.0)
    assert summary.round_p50_us.max == 6.5
    assert summary.call_us.p50 == pytest.approx(6.0)


@pytest.mark.slow  # 6 s of serving; CI runs it
def test_a_soak_run_counts_losses_duplicates_and_memory(tmp_path: Path) -> None:
    need(importlib.util.find_spec("awsiot") is not None, "awsiotsdk (pip install awsiotsdk)")
    from edgeboost.benchmarks.cli import main

    assert main(["--soak", "4", "-o", str(tmp_path)]) == 0
    soak = json.loads((tmp_path / "soak.json").read_text())["soak"]
    assert soak["answered"] > 100 and soak["lost"] == 0 and soak["duplicates"] == 0
    assert soak["answered"] == soak["requests"]
    assert soak["rss"]["samples"] >= 3 and soak["rss"]["start_mib"] > 5
    assert soak["exit_codes"] == {"server": 0, "broker": 0}
    assert "| lost / duplicate replies | 0 / 0 |" in (tmp_path / "SOAK.md").read_text()


def test_the_soak_summary_sees_a_leak_and_ignores_warm_up() -> None:
    from edgeboost.benchmarks.soak import rss_trend

    # 10 minutes: +20 MiB in the first minute (start-up), then 0.5 MiB per minute.
    samples = [(t, int(1024 * (30 + min(t, 60) / 3 + max(0, t - 60) / 120))) for t in range(601)]
    trend = rss_trend(samples)
    assert trend.settled_from_s == 120
    assert trend.slope_mib_per_min == pytest.approx(0.5, abs=0.01)
    assert trend.growth_settled_mib == pytest.approx(0.5 * (585 - 135) / 60, abs=0.05)
    flat = rss_trend([(t, 40 * 1024) for t in range(601)])
    assert flat.slope_mib_per_min == pytest.approx(0) and flat.growth_settled_mib == 0

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
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import need

ENGINES = (
    "xgboost-inplace-1t",
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


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict[str, Any]]:
    need(importlib.util.find_spec("matplotlib") is not None, "matplotlib (edgeboost[bench])")
    from edgeboost.benchmarks.cli import main

    out = tmp_path_factory.mktemp("bench")
    engines = [
        arg
        for key in (*ENGINES, "edgeboost-kernel-c", "edgeboost-tl2cgen-c")
        for arg in ("--engine", key)
    ]
    code = main(["-o", str(out), "--work", str(out / "work"), *TINY, *engines])
    return code, out, json.loads((out / "results.json").read_text())


def test_the_run_writes_results_report_and_plots(
    smoke: tuple[int, Path, dict[str, Any]],
) -> None:
    code, out, results = smoke
    assert code == 0, results.get("parity_failures")
    for name in ("latency.png", "throughput.png", "memory.png", "size.png"):
        size = (out / name).stat().st_size
        assert 1_000 < size < 200_000, (name, size)
    report = (out / "REPORT.md").read_text()
    for heading in (
        "## Summary",
        "## Backends: tl2cgen and kernel",
        "## Parity with XGBoost",
        "## Serving",
        "## Host and versions",
    ):
        assert heading in report
    assert "Protocol:" in report
    assert results["host"]["logical_cores"] >= 1 and results["versions"]["xgboost-cpu"]
    wine = results["models"]["wine-quality"]
    assert set(wine["timing"]) == {*ENGINES, "edgeboost-kernel-c", "edgeboost-tl2cgen-c"}
    single = wine["timing"]["edgeboost-kernel-c"]["1"]
    assert single["call_us"]["p50"] > 0 and single["rows_per_cpu_s"]["median"] > 0
    assert wine["coldstart"]["edgeboost-kernel-array"]["peak_rss_mib"] > 1
    for backend in ("tl2cgen", "kernel"):
        built = next(iter(wine["builds"][backend]["targets"].values()))
        assert built["library_bytes"] > 0 and built["zip_bytes"] > 0


def test_the_backends_section_shows_both_side_by_side(
    smoke: tuple[int, Path, dict[str, Any]],
) -> None:
    _, out, results = smoke
    backends = results["backends"]
    assert backends["engines"]["kernel"] == {
        "python": "edgeboost-kernel-numpy",
        "c": "edgeboost-kernel-c",
    }
    wine = backends["models"]["wine-quality"]
    for backend in ("tl2cgen", "kernel"):
        figures = wine[backend]
        for figure in ("python_p50_us", "c_p50_us", "python_rows_per_cpu_s", "c_rows_per_cpu_s"):
            assert figures[figure] > 0, (backend, figure)
        assert figures["library_bytes"] > 0 and figures["compile_wall_s"]
        # Only this machine's target was compiled: no all-targets figure.
        assert figures["compile_all_targets_s"] is None
    assert wine["xgboost"]["engine"] == "xgboost-inplace-1t" and wine["xgboost"]["python_p50_us"]
    ratios = wine["ratios"]
    assert ratios["kernel/tl2cgen"]["python_p50_us"] == pytest.approx(
        wine["kernel"]["python_p50_us"] / wine["tl2cgen"]["python_p50_us"]
    )
    assert set(ratios["kernel/xgboost"]) == {"python_p50_us", "python_rows_per_cpu_s"}
    # The issue's targets are on the 400x6 model, which this run leaves out.
    assert [t["figure"] for t in backends["issue_targets"]] == [
        "python_p50_us",
        "python_rows_per_cpu_s",
        "compile_all_targets_s",
    ]
    assert all(t["met"] == {"tl2cgen": None, "kernel": None} for t in backends["issue_targets"])
    assert "kernel / XGBoost" in (out / "REPORT.md").read_text()


def test_parity_is_present_and_exact(smoke: tuple[int, Path, dict[str, Any]]) -> None:
    _, _, results = smoke
    wine = results["models"]["wine-quality"]
    for key in EDGEBOOST:
        report = wine["parity"][key]
        assert report["rows"] == 1000
        assert report["exact"] and report["margin_mismatched_rows"] == 0, (key, report)
        assert report["max_abs_margin_diff"] == 0
    # This machine's library is covered by the C engines (same library, same parity driver).
    assert wine["target_parity"] == {"tl2cgen": {}, "kernel": {}}
    assert results["parity_failures"] == []
    assert "bit-exact with XGBoost" in (smoke[1] / "REPORT.md").read_text()


def test_serving_was_measured(smoke: tuple[int, Path, dict[str, Any]]) -> None:
    need(importlib.util.find_spec("awsiot") is not None, "awsiotsdk (pip install awsiotsdk)")
    serving = smoke[2]["serving"]
    assert "error" not in serving, serving
    assert serving["round_trips"] == 5 and serving["round_trip_ms"]["p50"] > 0
    assert serving["exit_codes"] == {"server": 0, "broker": 0}
    transports = serving["transports"]
    assert set(transports) == {"builtin", "awsiotsdk"}
    for name, figures in transports.items():
        assert figures["transport"] == name and figures["exit_codes"]["server"] == 0
        assert figures["server_threads"] >= 2 and figures["server_rss_after_mib"] > 5
    assert transports["builtin"]["server_threads"] <= 3  # main, worker, IPC
    assert "### Transports" in (smoke[1] / "REPORT.md").read_text()


def test_a_parity_failure_fails_the_command(
    smoke: tuple[int, Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from edgeboost.benchmarks import cli, runner

    results = dict(
        smoke[2], parity_failures=["wine-quality: edgeboost-kernel-numpy is not bit-exact"]
    )
    monkeypatch.setattr(runner, "run_benchmark", lambda *a, **k: (results, ["not exact"]))
    assert cli.main(["-o", str(tmp_path), "--no-plots"]) == 1
    assert "Parity FAILED" in (tmp_path / "REPORT.md").read_text()


def test_compare_sees_one_ulp() -> None:
    from edgeboost.benchmarks.parity import compare

    reference = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    nudged = reference.copy()
    nudged[1] = np.nextafter(nudged[1], np.float32(0))
    same = compare(reference, reference, reference, reference)
    assert same["exact"] and same["max_ulp_margin"] == 0
    off = compare(nudged, nudged, reference, reference)
    assert not off["exact"]
    assert off["margin_mismatched_rows"] == 1 and off["max_ulp_margin"] == 1
    assert compare(None, reference, reference, reference)["exact"] is False  # no margins


def test_the_synthetic_model_is_the_same_every_run(tmp_path: Path) -> None:
    from edgeboost.benchmarks.config import SyntheticSpec
    from edgeboost.benchmarks.models import train_synthetic

    spec = SyntheticSpec(trees=4, depth=3, features=6, rows=400)
    first = train_synthetic(spec, tmp_path / "a")
    second = train_synthetic(spec, tmp_path / "b")
    assert first.model_path.read_bytes() == second.model_path.read_bytes()
    assert (first.num_tree, first.max_depth, first.num_feature) == (4, 3, 6)
    assert first.objective == "binary:logistic"


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
    from edgeboost.benchmarks.backends import BACKEND_ENGINES, ISSUE_TARGETS
    from edgeboost.benchmarks.config import WINE_SHAPED, full_config, quick_config
    from edgeboost.benchmarks.engines import ENGINES
    from edgeboost.benchmarks.models import WINE_MODEL, load_case
    from edgeboost.compile import BACKENDS, DEFAULT_BACKEND

    # "Wine-shaped": as many features as the shipped model.
    assert WINE_SHAPED.features == load_case("wine-quality", WINE_MODEL).num_feature
    needed = {key for engines in BACKEND_ENGINES.values() for key in engines.values()}
    for config in (full_config(), quick_config()):
        assert set(config.backends) == set(BACKENDS), config.mode
        specs = {spec.key: spec for spec in config.synthetic}
        for target in ISSUE_TARGETS:
            spec = specs[target.model]
            assert not spec.engines or needed <= set(spec.engines), (config.mode, spec.key)
            assert "all" in spec.targets and DEFAULT_BACKEND not in spec.host_only
        for spec in config.synthetic:
            assert set(spec.engines) <= set(ENGINES), spec.key
            assert set(spec.backends) | set(spec.host_only) <= set(config.backends), spec.key


def _fake_results(p50_us: float, rows_per_cpu_s: float, compile_s: float) -> dict[str, Any]:
    """The parts of results.json backend_summary reads, for the 400x6 model's kernel backend."""

    def timing(value: float) -> dict[str, Any]:
        return {
            "1": {
                "call_us": {"p50": value},
                "round_p50_us": {"min": value * 0.8},
                "rows_per_cpu_s": {"median": 1e6 / value},
            },
            "100": {
                "rows_per_cpu_s": {"median": rows_per_cpu_s, "max": rows_per_cpu_s * 1.25},
                "cpu_per_wall": 1.0,
            },
        }

    targets = {
        triple: {"compile_wall_seconds": compile_s / 3, "compiler_seconds": 1.0, "library_bytes": 1}
        for triple in ("x86_64-linux-gnu", "aarch64-linux-gnu", "armv7-linux-gnueabihf")
    }
    model = {
        "timing": {"edgeboost-kernel-numpy": timing(p50_us), "xgboost-inplace-1t": timing(300.0)},
        "builds": {"kernel": {"targets": targets}},
    }
    return {"config": {"batch_sizes": [1, 100]}, "models": {"synthetic-400x6": model}}


def test_the_issue_targets_are_judged_from_the_figures() -> None:
    from edgeboost.benchmarks.backends import backend_summary

    def verdicts(results: dict[str, Any]) -> list[bool | None]:
        return [t["met"]["kernel"] for t in backend_summary(results)["issue_targets"]]

    assert verdicts(_fake_results(2.5, 700_000, 9.0)) == [True, True, True]
    assert verdicts(_fake_results(3.5, 500_000, 12.0)) == [False, False, False]
    assert verdicts(_fake_results(3.0, 600_000, 10.0)) == [True, True, True]  # limits included
    summary = backend_summary(_fake_results(2.5, 700_000, 9.0))
    assert [t["met"]["tl2cgen"] for t in summary["issue_targets"]] == [None, None, None]
    # The best round is reported beside the verdict, never judged.
    best = [
        t["best_round"]["kernel"]
        for t in backend_summary(_fake_results(3.5, 500_000, 12.0))["issue_targets"]
    ]
    assert best == [pytest.approx(2.8), pytest.approx(625_000), None]
    ratios = summary["models"]["synthetic-400x6"]["ratios"]["kernel/xgboost"]
    assert ratios["python_p50_us"] == pytest.approx(2.5 / 300.0)


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
    assert summary["round_p50_us"] == {"median": 4.25, "min": 2.0, "max": 6.5}
    assert summary["call_us"]["p50"] == pytest.approx(6.0)


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
    from edgeboost.benchmarks.soak import _rss_summary

    # 10 minutes: +20 MiB in the first minute (start-up), then 0.5 MiB per minute.
    samples = [(t, int(1024 * (30 + min(t, 60) / 3 + max(0, t - 60) / 120))) for t in range(601)]
    summary = _rss_summary(samples)
    assert summary["settled_from_s"] == 120
    assert summary["slope_mib_per_min"] == pytest.approx(0.5, abs=0.01)
    assert summary["growth_settled_mib"] == pytest.approx(0.5 * (585 - 135) / 60, abs=0.05)
    flat = _rss_summary([(t, 40 * 1024) for t in range(601)])
    assert flat["slope_mib_per_min"] == pytest.approx(0) and flat["growth_settled_mib"] == 0

"""Smoke-run of the benchmark CLI with tiny numbers (as argon2 runs its benchmark CLI in tox).

One run: the shipped wine model for this machine only, a few rows, one round, a few engines,
serving with a handful of requests. It checks what the run writes, not how fast anything is;
parity is checked for real (bit-exact or the command fails).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import need

ENGINES = ("xgboost-inplace-1t", "edgeboost-numpy", "edgeboost-array", "edgeboost-dicts")
EDGEBOOST = ("edgeboost-numpy", "edgeboost-array", "edgeboost-dicts", "edgeboost-c")
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
    engines = [arg for key in (*ENGINES, "edgeboost-c") for arg in ("--engine", key)]
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
    for heading in ("## Summary", "## Parity with XGBoost", "## Serving", "## Host and versions"):
        assert heading in report
    assert "Protocol:" in report
    assert results["host"]["logical_cores"] >= 1 and results["versions"]["xgboost-cpu"]
    wine = results["models"]["wine-quality"]
    assert set(wine["timing"]) == {*ENGINES, "edgeboost-c"}
    single = wine["timing"]["edgeboost-c"]["1"]
    assert single["call_us"]["p50"] > 0 and single["rows_per_cpu_s"]["median"] > 0
    assert wine["coldstart"]["edgeboost-array"]["peak_rss_mib"] > 1
    built = next(iter(wine["builds"]["tl2cgen"]["targets"].values()))
    assert built["library_bytes"] > 0 and built["zip_bytes"] > 0


def test_parity_is_present_and_exact(smoke: tuple[int, Path, dict[str, Any]]) -> None:
    _, _, results = smoke
    wine = results["models"]["wine-quality"]
    for key in EDGEBOOST:
        report = wine["parity"][key]
        assert report["rows"] == 1000
        assert report["exact"] and report["margin_mismatched_rows"] == 0, (key, report)
        assert report["max_abs_margin_diff"] == 0
    # This machine's library is covered by the C engine (same library, same parity driver).
    assert wine["target_parity"]["tl2cgen"] == {}
    assert results["parity_failures"] == []
    assert "bit-exact with XGBoost" in (smoke[1] / "REPORT.md").read_text()


def test_serving_was_measured(smoke: tuple[int, Path, dict[str, Any]]) -> None:
    need(importlib.util.find_spec("awsiot") is not None, "awsiotsdk (pip install awsiotsdk)")
    serving = smoke[2]["serving"]
    assert "error" not in serving, serving
    assert serving["round_trips"] == 5 and serving["round_trip_ms"]["p50"] > 0
    assert serving["exit_codes"] == {"server": 0, "broker": 0}


def test_a_parity_failure_fails_the_command(
    smoke: tuple[int, Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from edgeboost.benchmarks import cli, runner

    results = dict(smoke[2], parity_failures=["wine-quality: edgeboost-numpy is not bit-exact"])
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

"""Parity with XGBoost on the host target: margins bit-identical, transforms within 1 ULP.

This is the TL2cgen backend's suite (the reference backend); the kernel backend, the default,
has its own in tests/test_kernel_backend.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from edgeboost.compile import load_source_model
from edgeboost.compile.parity import (
    ParityReport,
    compare_outputs,
    max_ulp_difference,
    parity_rows,
    reference_predictions,
    split_thresholds,
)
from edgeboost.runtime import Model

from .conftest import OLD_MODEL_EXPECTED, SHIPPED_MODEL
from .strategies import HYPOTHESIS_BATCHES, probing_rows
from .zoo import OBJECTIVES, train

BACKEND = "tl2cgen"


@pytest.fixture(scope="session")
def old_bundle(shared_data: Path, compile_once: Callable[..., Path]) -> Path:
    return compile_once(shared_data / "xgboost_wine_quality.json", "old-wine", backend=BACKEND)


@pytest.fixture(scope="session")
def shipped_bundle(compile_once: Callable[..., Path]) -> Path:
    return compile_once(SHIPPED_MODEL, "wine-quality", backend=BACKEND)


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo(zoo_dir: Path, compile_once: Callable[..., Path]) -> Callable[[str], tuple[Path, Path]]:
    """zoo(name) -> (model file, bundle), trained and compiled once per session."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in made:
            suffix = ".ubj" if name == "binary_logistic" else ".json"  # one UBJSON model too
            model = train(name, zoo_dir, suffix=suffix)
            made[name] = (model, compile_once(model, f"zoo-{name}", backend=BACKEND))
        return made[name]

    return get


def _report(model: Model, booster: Any, rows: np.ndarray) -> ParityReport:
    margin, value = reference_predictions(booster, rows)
    return compare_outputs(
        {"margin": model.predict(rows, margin=True), "value": model.predict(rows)},
        {"margin": margin, "value": value},
        label="xgboost",
    )


def test_old_deployed_model_gives_the_recorded_predictions(
    old_bundle: Path, shared_data: Path
) -> None:
    model = Model.load(old_bundle)
    samples = json.loads((shared_data / "samples.json").read_text())
    assert model.predict(samples) == OLD_MODEL_EXPECTED


def test_old_model_whole_wine_table_bit_identical(old_bundle: Path, shared_data: Path) -> None:
    header, *lines = (shared_data / "wine_concat.csv").read_text().splitlines()
    names = header.split(",")
    features = [n for n in names if n not in ("quality", "color")]
    rows = np.array(
        [
            [float(v) for n, v in zip(names, line.split(","), strict=True) if n in features]
            + [float(line.endswith("red")), float(line.endswith("white"))]
            for line in lines
        ],
        dtype=np.float32,
    )
    assert rows.shape == (5320, 13)
    booster = load_source_model(shared_data / "xgboost_wine_quality.json").booster()
    report = _report(Model.load(old_bundle), booster, rows)
    assert report.margin_mismatched_rows == 0, report
    assert report.max_ulp_transformed == 0, report


@pytest.mark.parametrize("name", ["old", "shipped"])
def test_wine_models_bit_identical_on_probing_rows(
    name: str, request: pytest.FixtureRequest
) -> None:
    if name == "old":
        bundle = request.getfixturevalue("old_bundle")
        path = request.getfixturevalue("shared_data") / "xgboost_wine_quality.json"
    else:
        bundle, path = request.getfixturevalue("shipped_bundle"), SHIPPED_MODEL
    source = load_source_model(path)
    rows = parity_rows(source, 50_000, seed=11)
    report = _report(Model.load(bundle), source.booster(), rows)
    assert report.margin_mismatched_rows == 0, report
    assert report.max_ulp_transformed == 0, report


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objectives_match_xgboost(name: str, zoo: Callable[[str], tuple[Path, Path]]) -> None:
    path, bundle = zoo(name)
    model = Model.load(bundle)
    source = load_source_model(path)
    report = _report(model, source.booster(), parity_rows(source, 20_000))
    assert report.margin_mismatched_rows == 0, report
    assert report.max_ulp_transformed <= 1, report
    expected_width = {"multi_softprob": 4, "multi_softmax": 4, "multi_target": 3}.get(name, 1)
    assert model.num_output == expected_width
    # The shapes XGBoost gives (multi:softmax: margins (n, 4), values (n,), the class).
    rows = parity_rows(source, 10)
    margin, value = reference_predictions(source.booster(), rows)
    assert model.predict(rows, margin=True).shape == margin.shape
    assert model.predict(rows).shape == value.shape


@pytest.mark.parametrize(
    "which", [pytest.param("shipped", marks=pytest.mark.slow), "missing_values"]
)
def test_hypothesis_rows_bit_identical(
    which: str, request: pytest.FixtureRequest, zoo: Callable[[str], tuple[Path, Path]]
) -> None:
    if which == "shipped":
        bundle, path = request.getfixturevalue("shipped_bundle"), SHIPPED_MODEL
    else:  # a model trained with 15% missing values, so default directions matter
        path, bundle = zoo("reg_squarederror")
    source = load_source_model(path)
    model = Model.load(bundle)
    booster = source.booster()
    checked = []

    @settings(
        max_examples=HYPOTHESIS_BATCHES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,  # a batch of wide rows is large by design
        ],
    )
    @given(rows=probing_rows(split_thresholds(source), source.num_feature))
    def check(rows: list[tuple[float, ...]]) -> None:
        batch = np.array(rows, dtype=np.float32)
        report = _report(model, booster, batch)
        assert report.margin_mismatched_rows == 0, (report, batch)
        checked.append(len(batch))

    check()
    assert sum(checked) >= 10_000


def test_ulp_distance_counts_adjacent_floats() -> None:
    one = np.float32(1.0)
    assert max_ulp_difference(np.array([one]), np.array([np.nextafter(one, np.float32(2))])) == 1
    assert max_ulp_difference(np.array([0.0], np.float32), np.array([-0.0], np.float32)) == 0
    tiny = np.array([np.nextafter(np.float32(0), np.float32(1))])
    assert max_ulp_difference(-tiny, tiny) == 2

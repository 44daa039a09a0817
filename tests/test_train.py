"""The wine-quality reference model: feature engineering, historical split, training, and
the shipped model agreeing with its model card."""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeboost.training.train import (
    MAX_MODEL_BYTES,
    NFOLD,
    Trial,
    one_standard_error_band,
    paired_bootstrap,
    regression_metrics,
    train_wine_quality,
)
from edgeboost.training.wine import (
    FEATURE_NAMES,
    FEATURE_TYPES,
    PHYSICOCHEMICAL,
    historical_split,
    load_wine_quality,
)

xgb = pytest.importorskip("xgboost")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MODEL_DIR = REPO / "models" / "wine-quality"
MODEL = MODEL_DIR / "model.json"
CARD = MODEL_DIR / "MODEL_CARD.md"
REQUESTS = MODEL_DIR / "requests.json"
QUALITY_COUNTS = {3: 30, 4: 206, 5: 1752, 6: 2323, 7: 856, 8: 148, 9: 5}


def shared_file(name: str) -> Path:
    """A file of ../shared/data: skip locally when missing, fail in CI (like conftest)."""
    path = SHARED_DATA / name
    if not path.is_file():
        if os.environ.get("CI") == "true" or os.environ.get("EDGEBOOST_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{path} is required in CI but missing")
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="module")
def data_dir() -> Path:
    shared_file("winequality-red.csv")
    return shared_file("winequality-white.csv").parent


@pytest.fixture(scope="module")
def split(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = load_wine_quality(data_dir)
    return historical_split(data.X, data.y)


def _dmatrix(X: np.ndarray) -> Any:
    return xgb.DMatrix(X, feature_names=list(FEATURE_NAMES), feature_types=list(FEATURE_TYPES))


def _records_to_matrix(records: list[dict[str, float]]) -> np.ndarray:
    return np.asarray([[r[name] for name in FEATURE_NAMES] for r in records], dtype=np.float32)


def _card_row(label: str) -> tuple[float, float, float]:
    """RMSE, MAE, R2 from the card's metrics table row that starts with ``label``."""
    pattern = rf"^\| {re.escape(label)} [^|]*\| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|"
    match = re.search(pattern, CARD.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"{CARD} has no metrics row for {label!r}"
    rmse, mae, r2 = (float(v) for v in match.groups())
    return rmse, mae, r2


def _rounded(metrics: dict[str, float]) -> tuple[float, float, float]:
    """The card states metrics to 4 decimals."""
    return round(metrics["rmse"], 4), round(metrics["mae"], 4), round(metrics["r2"], 4)


@pytest.mark.needs_shared
def test_features_reproduce_wine_concat(data_dir: Path) -> None:
    data = load_wine_quality(data_dir)
    with shared_file("wine_concat.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert data.X.shape == (5320, 13)
    assert data.feature_names == FEATURE_NAMES
    expected = np.asarray([[r[c] for c in PHYSICOCHEMICAL] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(data.X[:, :11], expected)
    colors = [r["color"] for r in rows]
    np.testing.assert_array_equal(data.X[:, 11], [c == "red" for c in colors])
    np.testing.assert_array_equal(data.X[:, 12], [c == "white" for c in colors])
    np.testing.assert_array_equal(data.y, np.asarray([r["quality"] for r in rows], np.float32))
    assert Counter(int(q) for q in data.y) == QUALITY_COUNTS


@pytest.mark.needs_shared
def test_split_starts_with_the_samples_records(split: tuple[np.ndarray, ...]) -> None:
    X_train, X_test, y_train, y_test = split
    assert (len(X_train), len(y_train), len(X_test), len(y_test)) == (3990, 3990, 1330, 1330)
    samples = json.loads(shared_file("samples.json").read_text())
    np.testing.assert_array_equal(_records_to_matrix(samples), X_test[:2])


@pytest.mark.needs_shared
def test_short_training_is_deterministic_and_beats_baseline(data_dir: Path, tmp_path: Path) -> None:
    first = train_wine_quality(data_dir, tmp_path / "a" / "model.json", trials=1)
    second = train_wine_quality(data_dir, tmp_path / "b" / "model.json", trials=1)
    assert (tmp_path / "a" / "model.json").read_bytes() == (
        tmp_path / "b" / "model.json"
    ).read_bytes()
    assert first["sha256"] == second["sha256"]
    assert first["rows"] == {"total": 5320, "train": 3990, "test": 1330}
    assert first["test"]["rmse"] < 0.9 * first["mean_baseline_test"]["rmse"]
    assert first["test"]["mae"] < first["mean_baseline_test"]["mae"]
    booster = xgb.Booster(model_file=str(tmp_path / "a" / "model.json"))
    assert tuple(booster.feature_names) == FEATURE_NAMES


@pytest.mark.needs_shared
def test_ubj_output_is_ubjson(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.ubj"
    report = train_wine_quality(data_dir, out, trials=1)
    assert report["format"] == "ubj"
    assert not out.read_bytes().startswith(b'{"')  # UBJSON, not JSON text
    assert xgb.Booster(model_file=str(out)).num_features() == 13


def test_unknown_output_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.json or \.ubj"):
        train_wine_quality(tmp_path, tmp_path / "model.bin", trials=1)


def test_shipped_model_has_names_types_and_fits_the_repo() -> None:
    booster = xgb.Booster(model_file=str(MODEL))
    assert tuple(booster.feature_names) == FEATURE_NAMES
    assert tuple(booster.feature_types) == FEATURE_TYPES
    assert MODEL.stat().st_size <= MAX_MODEL_BYTES < 1024 * 1024


@pytest.mark.needs_shared
def test_shipped_model_scores_what_the_card_says(split: tuple[np.ndarray, ...]) -> None:
    _, X_test, _, y_test = split
    booster = xgb.Booster(model_file=str(MODEL))
    ours = regression_metrics(y_test, booster.predict(_dmatrix(X_test)))
    assert _card_row("edgeboost") == _rounded(ours)
    old = xgb.Booster(model_file=str(shared_file("xgboost_wine_quality.json")))
    theirs = regression_metrics(y_test, old.predict(_dmatrix(X_test)))
    assert _card_row("old deployed") == _rounded(theirs)
    # The difference and its 95% interval (paired bootstrap over the test rows), as stated.
    old_predictions = old.predict(_dmatrix(X_test))
    compared = paired_bootstrap(y_test, booster.predict(_dmatrix(X_test)), old_predictions)
    card = " ".join(CARD.read_text(encoding="utf-8").split())  # lines wrap anywhere
    for metric in ("rmse", "mae"):
        low, high = compared[metric]["ci95"]
        stated = (
            f"{metric.upper()} {compared[metric]['difference']:+.4f} "
            f"(95% interval {low:+.4f} to {high:+.4f})"
        )
        assert stated in card, stated


def test_shipped_model_has_the_trees_the_card_says() -> None:
    """Trees and single-leaf trees ("stumps", which only add a constant) as in the card."""
    booster = xgb.Booster(model_file=str(MODEL))
    trees = [tree for tree in booster.get_dump() if tree.strip()]
    stumps = sum(tree.strip().startswith("0:leaf=") for tree in trees)
    card = CARD.read_text(encoding="utf-8")
    assert f"| boosting rounds (trees) | {len(trees)}, of which {stumps} single leaves |" in card


def test_one_standard_error_rule_takes_the_fewest_rounds_in_the_band() -> None:
    spread = 0.02 * NFOLD**0.5  # a standard error of 0.02
    best = Trial(1, {}, 0.70, spread, 5, (0.9, 0.75, 0.71, 0.705, 0.70), (spread,) * 5)
    outside = Trial(2, {}, 0.73, spread, 3, (0.8, 0.75, 0.73), (spread,) * 3)
    small = Trial(3, {}, 0.715, 0.01, 2, (0.73, 0.715), (0.01, 0.01))
    chosen, threshold, band = one_standard_error_band([outside, small, best])
    assert chosen is best and threshold == pytest.approx(0.72)
    assert band == [(small, 2), (best, 3)]  # the fewest rounds within 0.72; never trial 2


def test_paired_bootstrap_of_equal_and_of_better_predictions() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    theirs = y + rng.normal(size=500)
    same = paired_bootstrap(y, theirs, theirs)
    assert same == {m: {"difference": 0.0, "ci95": [0.0, 0.0]} for m in ("rmse", "mae")}
    better = paired_bootstrap(y, y + 0.5 * (theirs - y), theirs)
    assert better["rmse"]["ci95"][1] < 0 and better["mae"]["ci95"][1] < 0
    assert better == paired_bootstrap(y, y + 0.5 * (theirs - y), theirs)  # seeded


def test_requests_file_is_three_named_records() -> None:
    records = json.loads(REQUESTS.read_text())
    assert len(records) == 3
    for record in records:
        assert tuple(record) == FEATURE_NAMES
        assert all(type(v) in (int, float) for v in record.values())


@pytest.mark.needs_shared
def test_requests_come_from_the_test_split_but_not_samples(
    split: tuple[np.ndarray, ...],
) -> None:
    X_train, X_test, _, _ = split
    requests = _records_to_matrix(json.loads(REQUESTS.read_text()))
    samples = _records_to_matrix(json.loads(shared_file("samples.json").read_text()))
    test_rows = {row.tobytes() for row in X_test}
    for row in requests:
        assert row.tobytes() in test_rows
        assert not any(np.array_equal(row, s) for s in samples)
        assert not any(np.array_equal(row, t) for t in X_train)

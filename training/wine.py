"""The UCI Wine Quality data as the reference model sees it.

Reproduces the feature engineering behind the old deployed model from the two raw UCI
CSVs: parse, drop exact duplicates, red rows then white rows, one-hot colour at the end.
Only the stdlib ``csv`` module and numpy are used, so no pandas is needed to train.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeboost.compile._deps import require

__all__ = [
    "COLORS",
    "FEATURE_NAMES",
    "FEATURE_TYPES",
    "LABEL",
    "PHYSICOCHEMICAL",
    "SPLIT_SEED",
    "TEST_SIZE",
    "WineData",
    "historical_split",
    "load_wine_quality",
    "read_uci_csv",
]

PHYSICOCHEMICAL = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
)
LABEL = "quality"
# Order matters: red rows come first, and the one-hot columns follow in this order.
COLORS = ("red", "white")
FEATURE_NAMES = (*PHYSICOCHEMICAL, *(f"color_{c}" for c in COLORS))
# The old model declared the one-hot columns as ``int``; keep that so names and types match.
FEATURE_TYPES = ("float",) * len(PHYSICOCHEMICAL) + ("int",) * len(COLORS)
# The historical split: sklearn's train_test_split(X, y, random_state=2), default 25 %.
SPLIT_SEED = 2
TEST_SIZE = 0.25


@dataclass(frozen=True)
class WineData:
    """Feature matrix (float32, what XGBoost sees), labels and feature names."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]


def read_uci_csv(path: Path) -> list[tuple[float, ...]]:
    """Rows of one raw UCI file (``;``-separated, quoted header) as float tuples, in
    :data:`PHYSICOCHEMICAL` order followed by the label."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = next(reader)
        wanted = (*PHYSICOCHEMICAL, LABEL)
        missing = [name for name in wanted if name not in header]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        index = [header.index(name) for name in wanted]
        return [tuple(float(row[i]) for i in index) for row in reader if row]


def _drop_duplicates(rows: Iterable[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """Keep the first of rows equal by value, like pandas ``drop_duplicates()``."""
    seen: set[tuple[float, ...]] = set()
    kept = []
    for row in rows:
        if row not in seen:
            seen.add(row)
            kept.append(row)
    return kept


def _one_hot(color: str) -> tuple[float, ...]:
    return tuple(1.0 if color == c else 0.0 for c in COLORS)


def load_wine_quality(data_dir: Path | str) -> WineData:
    """Read ``winequality-red.csv`` and ``winequality-white.csv`` from ``data_dir``.

    Duplicates are dropped within each file (as the original EDA did, before the concat),
    so a red and a white row with equal values both stay.
    """
    data_dir = Path(data_dir)
    features: list[tuple[float, ...]] = []
    labels: list[float] = []
    for color in COLORS:
        for row in _drop_duplicates(read_uci_csv(data_dir / f"winequality-{color}.csv")):
            features.append(row[:-1] + _one_hot(color))
            labels.append(row[-1])
    # float32 on purpose: XGBoost casts to float32 anyway, and it hides the float64
    # artefacts of the old pandas parser (no float32 value differs between the two).
    X = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels, dtype=np.float32)
    return WineData(X=X, y=y, feature_names=FEATURE_NAMES, feature_types=FEATURE_TYPES)


def historical_split(
    X: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``X_train, X_test, y_train, y_test`` exactly as the old work split the data.

    Kept only so the new model is scored on the same 1330 test rows as the old one.
    """
    model_selection = require("sklearn.model_selection")
    parts: Sequence[np.ndarray] = model_selection.train_test_split(
        X, y, test_size=TEST_SIZE, random_state=SPLIT_SEED
    )
    X_train, X_test, y_train, y_test = parts
    return X_train, X_test, y_train, y_test

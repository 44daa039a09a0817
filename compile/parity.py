"""Parity with XGBoost, the first law: margins bit for bit, transforms within 1 ULP.

Used at compile time (a bundle is only written if its host library agrees with XGBoost), by
the tests for every target, and by the benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from ._deps import require
from .source import SourceModel

__all__ = [
    "ParityReport",
    "compare_outputs",
    "max_ulp_difference",
    "parity_rows",
    "reference_predictions",
    "split_thresholds",
]


@dataclass(frozen=True)
class ParityReport:
    rows: int
    margin_mismatched_rows: int
    max_abs_margin_difference: float
    max_ulp_transformed: int
    reference: str

    @property
    def exact(self) -> bool:
        return self.margin_mismatched_rows == 0 and self.max_ulp_transformed <= 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_thresholds(source: SourceModel) -> dict[int, np.ndarray]:
    """Every float32 split threshold of the model, per feature index."""
    per_feature: dict[int, list[np.ndarray]] = {}
    model = source.treelite_model
    for i in range(model.num_tree):
        tree = model.get_tree_accessor(i)
        internal = tree.get_field("cleft") != -1
        features = tree.get_field("split_index")[internal]
        thresholds = np.asarray(tree.get_field("threshold"))[internal].astype(np.float32)
        for feature in np.unique(features):
            per_feature.setdefault(int(feature), []).append(thresholds[features == feature])
    return {f: np.unique(np.concatenate(v)) for f, v in per_feature.items()}


def parity_rows(source: SourceModel, n_rows: int, *, seed: int = 0) -> np.ndarray:
    """Rows that probe every decision the trees make.

    Per cell: 30% a split threshold exactly (the tie ``x < t`` must go right), 20% the float32
    just below or above one, 15% NaN (missing: default direction), 2% +-inf, and otherwise a
    uniform draw across and slightly beyond the feature's threshold range.
    """
    rng = np.random.default_rng(seed)
    thresholds = split_thresholds(source)
    rows = np.empty((n_rows, source.num_feature), dtype=np.float32)
    for j in range(source.num_feature):
        t = thresholds.get(j, np.array([0.0], dtype=np.float32))
        low, high = float(t.min()), float(t.max())
        span = max(high - low, 1.0)
        column = rng.uniform(low - 0.25 * span, high + 0.25 * span, n_rows).astype(np.float32)
        kind = rng.random(n_rows)
        picked = t[rng.integers(0, t.size, n_rows)]
        on = kind < 0.30
        column[on] = picked[on]
        near = (kind >= 0.30) & (kind < 0.50)
        direction = np.where(rng.random(n_rows) < 0.5, -np.inf, np.inf).astype(np.float32)
        column[near] = np.nextafter(picked[near], direction[near])
        column[(kind >= 0.50) & (kind < 0.65)] = np.nan
        infinite = (kind >= 0.65) & (kind < 0.67)
        column[infinite] = direction[infinite]
        rows[:, j] = column
    return rows


def reference_predictions(
    booster: Any, rows: np.ndarray, *, iteration_range: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """XGBoost's margin and transformed output for float32 rows (NaN = missing), from the
    rounds in ``iteration_range`` ((0, 0): all; see SourceModel.iteration_range)."""
    predict = partial(booster.inplace_predict, missing=np.nan, iteration_range=iteration_range)
    margin, value = predict(rows, predict_type="margin"), predict(rows, predict_type="value")
    return np.asarray(margin, dtype=np.float32), np.asarray(value, dtype=np.float32)


def max_ulp_difference(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in units of last place between float32 arrays (NaN==NaN is 0)."""
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    b = np.ascontiguousarray(b, dtype=np.float32).reshape(-1)
    if a.size == 0:
        return 0
    both_nan = np.isnan(a) & np.isnan(b)
    ordered_a, ordered_b = _ordered(a), _ordered(b)
    distance = np.abs(ordered_a - ordered_b)
    distance[both_nan] = 0
    return int(distance.max())


def _ordered(x: np.ndarray) -> np.ndarray:
    """Map float32 bit patterns onto integers that are adjacent for adjacent floats."""
    bits = x.view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def compare_outputs(
    ours: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], *, label: str
) -> ParityReport:
    """Compare {"margin", "value"} arrays from edgeboost with XGBoost's."""
    ours_margin = np.asarray(ours["margin"], dtype=np.float32).reshape(len(reference["margin"]), -1)
    ref_margin = np.asarray(reference["margin"], dtype=np.float32).reshape(ours_margin.shape)
    differs = ours_margin.view(np.uint32) != ref_margin.view(np.uint32)
    with np.errstate(invalid="ignore"):
        gap = np.abs(ours_margin.astype(np.float64) - ref_margin.astype(np.float64))
    return ParityReport(
        rows=len(ref_margin),
        margin_mismatched_rows=int(differs.any(axis=1).sum()),
        max_abs_margin_difference=float(np.nanmax(gap)) if gap.size else 0.0,
        max_ulp_transformed=max_ulp_difference(ours["value"], reference["value"]),
        reference=label,
    )


def xgboost_label(iteration_range: tuple[int, int] = (0, 0), num_rounds: int = 0) -> str:
    """What the reference was: the XGBoost call, with its iteration_range when not all."""
    label = f"xgboost {require('xgboost').__version__} inplace_predict"
    if iteration_range not in ((0, 0), (0, num_rounds)):
        label += f" iteration_range=({iteration_range[0]}, {iteration_range[1]})"
    return label

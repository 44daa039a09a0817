"""The models benchmarked: the shipped wine model and synthetic ones trained here.

A synthetic model is trained from fixed seeds on one thread, so every run on every machine
benchmarks the same trees (XGBoost's ``hist`` method is deterministic for a given thread
count), and a busy co-tenant cannot stall its OpenMP barriers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edgeboost.compile.kernel_backend import tree_depth

from .config import SyntheticSpec
from .results import ModelFacts

__all__ = [
    "TIMING_ROWS_MISSING",
    "WINE_MODEL",
    "ModelCase",
    "load_case",
    "timing_rows",
    "train_synthetic",
]

# The shipped model, installed with the package (package data of edgeboost.models).
WINE_MODEL = Path(str(resources.files("edgeboost.models"))) / "wine-quality" / "model.json"
# The share of missing values (NaN) in the rows that are timed.
TIMING_ROWS_MISSING = 0.05


@dataclass(frozen=True, slots=True)
class ModelCase:
    key: str
    model_path: Path
    objective: str
    num_tree: int
    num_node: int
    num_feature: int
    max_depth: int
    feature_names: tuple[str, ...]
    train_seconds: float | None = None

    @property
    def label(self) -> str:
        return f"{self.key} ({self.num_tree} trees, depth <= {self.max_depth})"

    def facts(self) -> ModelFacts:
        return ModelFacts(
            key=self.key,
            file=self.model_path.name,
            objective=self.objective,
            num_tree=self.num_tree,
            num_node=self.num_node,
            num_feature=self.num_feature,
            max_depth=self.max_depth,
            train_seconds=self.train_seconds,
        )


def load_case(key: str, model_path: Path, train_seconds: float | None = None) -> ModelCase:
    """Describe an XGBoost JSON model from the file itself."""
    import json

    document = json.loads(model_path.read_text())
    learner = document["learner"]
    trees = learner["gradient_booster"]["model"]["trees"]
    names = learner.get("feature_names") or []
    num_feature = int(learner["learner_model_param"]["num_feature"])
    return ModelCase(
        key=key,
        model_path=model_path,
        objective=learner["objective"]["name"],
        num_tree=len(trees),
        num_node=sum(int(t["tree_param"]["num_nodes"]) for t in trees),
        num_feature=num_feature,
        max_depth=max(tree_depth(t["left_children"], t["right_children"]) for t in trees),
        feature_names=tuple(names) or tuple(f"f{i}" for i in range(num_feature)),
        train_seconds=train_seconds,
    )


_OBJECTIVES = ("binary:logistic", "reg:squarederror")


def train_synthetic(spec: SyntheticSpec, out_dir: Path) -> ModelCase:
    """A model of ``spec.objective`` with 5% NaN in its training data (so default directions
    vary). The features are standard normal; the label depends on the first four of them."""
    import xgboost as xgb

    if spec.objective not in _OBJECTIVES:
        raise ValueError(f"unknown objective {spec.objective!r}; known: {', '.join(_OBJECTIVES)}")
    rng = np.random.default_rng(spec.seed)
    x = rng.normal(size=(spec.rows, spec.features)).astype(np.float32)
    score = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * np.abs(x[:, 3]) - 0.4
    noisy = score + rng.normal(scale=0.5, size=spec.rows)
    if spec.objective == "binary:logistic":
        y = (noisy > 0).astype(np.float32)
    else:  # a quality-like score around 6, as the wine model predicts
        y = (6 + noisy).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    names = [f"x{i:02d}" for i in range(spec.features)]
    params = {
        "objective": spec.objective,
        "max_depth": spec.depth,
        "eta": 0.05,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "tree_method": "hist",
        "seed": spec.seed,
        "nthread": 1,
    }
    started = time.perf_counter()
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=names), spec.trees)
    seconds = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.key}.json"
    booster.save_model(path)
    return load_case(spec.key, path, train_seconds=seconds)


def timing_rows(case: ModelCase, n_rows: int, *, seed: int = 1) -> np.ndarray:
    """Rows for timing: each feature uniform over its split-threshold range, a share
    ``TIMING_ROWS_MISSING`` of the values missing.

    Unlike the parity rows (which sit on thresholds, with NaN and inf), these walk the trees
    the way ordinary inputs do.
    """
    from edgeboost.compile import load_source_model
    from edgeboost.compile.parity import split_thresholds

    thresholds = split_thresholds(load_source_model(case.model_path))
    rng = np.random.default_rng(seed)
    rows = np.empty((n_rows, case.num_feature), dtype=np.float32)
    for j in range(case.num_feature):
        t = thresholds.get(j, np.array([0.0], dtype=np.float32))
        rows[:, j] = rng.uniform(float(t.min()), float(t.max()), n_rows)
    rows[rng.random(rows.shape) < TIMING_ROWS_MISSING] = np.nan
    return rows

"""Small XGBoost models of every supported objective, trained on data with missing values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

NUM_FEATURE = 6

# name -> (xgboost params, label kind)
OBJECTIVES: dict[str, tuple[dict[str, Any], str]] = {
    "reg_squarederror": ({"objective": "reg:squarederror"}, "continuous"),
    "reg_logistic": ({"objective": "reg:logistic"}, "unit"),
    "binary_logistic": ({"objective": "binary:logistic"}, "binary"),
    "binary_logitraw": ({"objective": "binary:logitraw"}, "binary"),
    "multi_softprob": ({"objective": "multi:softprob", "num_class": 4}, "class4"),
    "multi_softmax": ({"objective": "multi:softmax", "num_class": 4}, "class4"),
    "multi_target": (
        {"objective": "reg:squarederror", "multi_strategy": "one_output_per_tree"},
        "targets3",
    ),
    "count_poisson": ({"objective": "count:poisson"}, "count"),
}


def training_data(kind: str, n: int = 1500, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURE)).astype(np.float32)
    signal = x[:, 0] - 0.5 * x[:, 1] + np.sin(x[:, 2])
    x[rng.random(x.shape) < 0.15] = np.nan  # the default direction must be learnt and used
    labels = {
        "continuous": lambda: signal + rng.normal(scale=0.1, size=n),
        "unit": lambda: 1 / (1 + np.exp(-signal)),
        "binary": lambda: (signal > 0).astype(np.float32),
        "class4": lambda: np.digitize(signal, [-1, 0, 1]).astype(np.float32),
        "targets3": lambda: np.stack([signal, -signal, signal**2], axis=1),
        "count": lambda: rng.poisson(np.exp(signal / 2)).astype(np.float32),
    }
    return x, labels[kind]()


def train(name: str, directory: Path, *, rounds: int = 40, suffix: str = ".json") -> Path:
    import xgboost as xgb

    params, kind = OBJECTIVES[name]
    x, y = training_data(kind)
    booster = xgb.train(
        {**params, "max_depth": 5, "eta": 0.3, "seed": 1, "nthread": 1},
        xgb.DMatrix(x, label=y, missing=np.nan),
        num_boost_round=rounds,
    )
    path = directory / f"{name}{suffix}"
    booster.save_model(path)
    return path

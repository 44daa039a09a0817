"""Load an XGBoost booster file (JSON or UBJSON, any XGBoost >= 1.0) and describe it.

Trees come from Treelite (>= 4.6.1: older versions fail on XGBoost 3.1+ models or drop
their base score); names, types and objective come from XGBoost itself, which reads every
format it ever wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from .errors import UnsupportedModelError

__all__ = ["OBJECTIVES", "SourceModel", "load_source_model"]

_log = logging.getLogger(__name__)

# Objective -> the transform Treelite must report for it. Anything else is refused rather
# than compiled into something that might not match XGBoost.
OBJECTIVES = {
    "reg:squarederror": "identity",
    "reg:squaredlogerror": "identity",
    "reg:pseudohubererror": "identity",
    "reg:absoluteerror": "identity",
    "reg:linear": "identity",
    "binary:logitraw": "identity",
    "reg:logistic": "sigmoid",
    "binary:logistic": "sigmoid",
    "multi:softprob": "softmax",
    "count:poisson": "exponential",
    "reg:gamma": "exponential",
    "reg:tweedie": "exponential",
}
_MIN_TREELITE = (4, 6, 1)


@dataclass(frozen=True)
class SourceModel:
    path: Path
    raw: bytes
    sha256: str
    format: str  # "xgboost-json" | "xgboost-ubjson"
    objective: str
    postprocessor: str
    num_feature: int
    num_target: int
    num_class: tuple[int, ...]
    base_score: tuple[float, ...]  # float32 values, one per output, margin space
    feature_names: tuple[str, ...] | None
    feature_types: tuple[str, ...] | None
    num_tree: int
    num_leaf: int
    treelite_model: Any

    @property
    def num_output(self) -> int:
        return self.num_target * max(self.num_class)

    def booster(self) -> Any:
        """A fresh xgboost.Booster of the same bytes (for verification)."""
        xgb = require("xgboost")
        return xgb.Booster(model_file=bytearray(self.raw))


def sniff_format(raw: bytes) -> str:
    """JSON and UBJSON both start with '{'; JSON's next significant byte is '"' or '}'."""
    stripped = raw.lstrip()
    if not stripped.startswith(b"{"):
        raise UnsupportedModelError(
            "not an XGBoost JSON/UBJSON model (legacy binary models are not supported; "
            "re-save with booster.save_model('model.json'))"
        )
    return "xgboost-json" if stripped[1:].lstrip()[:1] in (b'"', b"}") else "xgboost-ubjson"


def load_source_model(path: str | Path) -> SourceModel:
    treelite = require("treelite")
    _check_treelite_version(treelite.__version__)
    path = Path(path)
    raw = path.read_bytes()
    fmt = sniff_format(raw)
    booster = require("xgboost").Booster(model_file=bytearray(raw))
    config = json.loads(booster.save_config())
    objective = config["learner"]["objective"]["name"]
    kind = config["learner"]["gradient_booster"]["name"]
    if kind != "gbtree":
        raise UnsupportedModelError(f"{path}: booster {kind!r} is not supported; use gbtree")
    try:
        tl_model = treelite.frontend.load_xgboost_model(
            path, format_choice="json" if fmt == "xgboost-json" else "ubjson"
        )
    except treelite.TreeliteError as exc:
        raise UnsupportedModelError(f"{path}: Treelite cannot load it: {exc}") from exc

    header = tl_model.get_header_accessor()
    postprocessor = str(header.get_field("postprocessor"))
    num_class = tuple(int(c) for c in header.get_field("num_class"))
    leaf_shape = tuple(int(d) for d in header.get_field("leaf_vector_shape"))
    _check_supported(objective, postprocessor, leaf_shape, booster.feature_types)

    num_target = int(header.get_field("num_target")[0])
    num_output = num_target * max(num_class)
    base = _xgboost_base_margin(booster, int(tl_model.num_feature))
    if base.size != num_output:
        raise UnsupportedModelError(
            f"{path}: {base.size} base scores for {num_output} outputs; cannot place them"
        )
    num_leaf = 0
    for i in range(tl_model.num_tree):
        tree = tl_model.get_tree_accessor(i)
        if int(tree.get_field("has_categorical_split")[0]):
            raise UnsupportedModelError(f"{path}: tree {i} has categorical splits")
        num_leaf += _reachable_leaves(tree.get_field("cleft"), tree.get_field("cright"))

    return SourceModel(
        path=path,
        raw=raw,
        sha256=hashlib.sha256(raw).hexdigest(),
        format=fmt,
        objective=objective,
        postprocessor=postprocessor,
        num_feature=int(tl_model.num_feature),
        num_target=num_target,
        num_class=num_class,
        base_score=tuple(float(v) for v in base),
        feature_names=tuple(booster.feature_names) if booster.feature_names else None,
        feature_types=tuple(booster.feature_types) if booster.feature_types else None,
        num_tree=int(tl_model.num_tree),
        num_leaf=num_leaf,
        treelite_model=tl_model,
    )


def _xgboost_base_margin(booster: Any, num_feature: int) -> np.ndarray:
    """The float32 margin XGBoost starts every row from, as XGBoost itself computes it.

    XGBoost stores base_score in probability space and converts it with float32 math
    (``-logf(1/p - 1)`` for logistic); Treelite converts in double, which differs by up to a
    few ULP and would break bit-exactness. So we ask XGBoost: the same model with every leaf
    set to 0 predicts exactly its base margin. (Removing the trees instead does not work: a
    tree-less model predicts the untransformed base_score.)
    """
    doc = json.loads(bytes(booster.save_raw("json")))
    gbm = doc["learner"]["gradient_booster"]
    if gbm.get("name") != "gbtree":
        raise UnsupportedModelError(f"booster {gbm.get('name')!r} is not supported; use gbtree")
    for tree in gbm["model"]["trees"]:
        # A leaf's value lives in split_conditions; its left child is -1.
        tree["split_conditions"] = [
            0.0 if left == -1 else value
            for left, value in zip(tree["left_children"], tree["split_conditions"], strict=True)
        ]
    xgb = require("xgboost")
    zeroed = xgb.Booster(model_file=bytearray(json.dumps(doc).encode()))
    row = np.zeros((1, num_feature), dtype=np.float32)
    margin = zeroed.inplace_predict(row, predict_type="margin", missing=np.nan)
    return np.asarray(margin, dtype=np.float32).reshape(-1)


def _reachable_leaves(left: Any, right: Any) -> int:
    """Leaves reachable from the root (XGBoost keeps pruned node slots, Treelite too)."""
    count, stack = 0, [0]
    while stack:
        node = stack.pop()
        if left[node] == -1:
            count += 1
        else:
            stack.extend((int(left[node]), int(right[node])))
    return count


def _check_treelite_version(version: str) -> None:
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    if parts < _MIN_TREELITE:
        raise UnsupportedModelError(
            f"treelite {version} is too old: versions before 4.6.1 fail on XGBoost 3.1+ models "
            "or silently drop base_score; pip install 'treelite>=4.6.1'"
        )


def _check_supported(
    objective: str, postprocessor: str, leaf_shape: tuple[int, ...], feature_types: Any
) -> None:
    if objective == "multi:softmax":
        raise UnsupportedModelError(
            "objective multi:softmax predicts class indices; train with multi:softprob "
            "(the same trees) and take the argmax of the probabilities"
        )
    if objective not in OBJECTIVES:
        raise UnsupportedModelError(
            f"objective {objective!r} is not supported; supported: {sorted(OBJECTIVES)}"
        )
    if OBJECTIVES[objective] != postprocessor:
        raise UnsupportedModelError(
            f"objective {objective} should map to transform {OBJECTIVES[objective]!r}, "
            f"but Treelite reports {postprocessor!r}"
        )
    if leaf_shape != (1, 1):
        raise UnsupportedModelError(
            f"vector-leaf trees (multi_strategy=multi_output_tree, leaf shape {leaf_shape}) "
            "are not supported; train with multi_strategy=one_output_per_tree"
        )
    if feature_types and any(t == "c" for t in feature_types):
        raise UnsupportedModelError("categorical features are not supported yet")

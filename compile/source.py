"""Load an XGBoost booster file (JSON or UBJSON, any XGBoost >= 1.0) and describe it.

The file is read and checked first (compile/model_file.py: every model that cannot be
compiled is refused in one line); XGBoost, which reads every format it ever wrote, then loads
it, and Treelite (>= 4.6.1: older versions fail on XGBoost 3.1+ models or drop their base
score) reads the trees from XGBoost's own re-save of it, so it never sees an old format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from .errors import UnsupportedModelError
from .model_file import ModelFileError, first_line, load_booster, read_model_file, sniff_format
from .native_output import native_output_to

__all__ = ["OBJECTIVES", "TREE_CHOICES", "SourceModel", "load_source_model", "sniff_format"]

_log = logging.getLogger(__name__)

# Objective -> the transform edgeboost applies (margin=False), as XGBoost's objective does.
# Anything else is refused rather than compiled into something that might not match XGBoost.
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
    # The trees and margins of softprob; the value is the index of the largest margin (the
    # first on ties) as a float32, one per row: XGBoost's softmax PredTransform.
    "multi:softmax": "max_index",
    "count:poisson": "exponential",
    "reg:gamma": "exponential",
    "reg:tweedie": "exponential",
}
# What Treelite reports for each of our transforms (it knows softmax only as "softmax").
_TREELITE_POSTPROCESSOR = {"max_index": "softmax"}
_MIN_TREELITE = (4, 6, 1)
# Which boosting rounds to compile (--trees). "all": what Booster.predict and inplace_predict
# use; "best": rounds up to the best_iteration early stopping recorded, what the
# scikit-learn wrapper's predict uses. The default is "all" (README, "Early stopping").
TREE_CHOICES = ("all", "best")


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
    num_tree: int  # compiled trees (those of iteration_range)
    num_leaf: int
    treelite_model: Any
    num_rounds: int = 0  # boosting rounds in the file
    best_iteration: int | None = None  # recorded by early stopping
    trees: str = "all"  # TREE_CHOICES
    iteration_range: tuple[int, int] = (0, 0)  # rounds compiled, as XGBoost's iteration_range

    def trees_record(self) -> dict[str, Any]:
        """Which rounds were compiled, for the manifest."""
        return {
            "selection": self.trees,
            "iteration_range": list(self.iteration_range),
            "num_rounds": self.num_rounds,
            "best_iteration": self.best_iteration,
        }

    @property
    def num_output(self) -> int:
        """Margins per row: num_target * num_class."""
        return self.num_target * max(self.num_class)

    @property
    def value_width(self) -> int:
        """Values per row after the transform: 1 for max_index (a class), else num_output."""
        return 1 if self.postprocessor == "max_index" else self.num_output

    def booster(self) -> Any:
        """A fresh xgboost.Booster of the same bytes (for verification)."""
        return load_booster(self.raw, self.path)


def load_source_model(path: str | Path, *, trees: str = "all") -> SourceModel:
    """Read, check and describe the model at ``path``; ``trees`` picks the rounds compiled
    (TREE_CHOICES). Notes (an old format, early stopping) go to the log, once."""
    treelite = require("treelite")
    _check_treelite_version(treelite.__version__)
    checked = read_model_file(path, OBJECTIVES)
    path = checked.path
    note = checked.old_format_note()
    if note:
        _log.warning("%s", note)
    booster = checked.load_booster()
    num_rounds = int(booster.num_boosted_rounds())
    end = _rounds_to_compile(path, trees, checked.best_iteration, num_rounds)
    # A slice of the booster (XGBoost's own) holds exactly the trees inplace_predict walks
    # with iteration_range=(0, end).
    tl_model = _treelite_model(path, booster if end == num_rounds else booster[0:end])

    header = tl_model.get_header_accessor()
    postprocessor = OBJECTIVES[checked.objective]
    num_class = tuple(int(c) for c in header.get_field("num_class"))
    leaf_shape = tuple(int(d) for d in header.get_field("leaf_vector_shape"))
    _check_supported(path, checked.objective, str(header.get_field("postprocessor")), leaf_shape)

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
        num_leaf += _reachable_leaves(tree.get_field("cleft"), tree.get_field("cright"))

    return SourceModel(
        path=path,
        raw=checked.raw,
        sha256=hashlib.sha256(checked.raw).hexdigest(),
        format=checked.format,
        objective=checked.objective,
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
        num_rounds=num_rounds,
        best_iteration=checked.best_iteration,
        trees=trees,
        iteration_range=(0, end),
    )


def _rounds_to_compile(path: Path, trees: str, best: int | None, num_rounds: int) -> int:
    """How many rounds to compile, with a note whenever early stopping makes it a choice."""
    if trees not in TREE_CHOICES:
        raise ValueError(f"trees must be one of {TREE_CHOICES}, got {trees!r}")
    if best is not None and not 0 <= best < num_rounds:
        raise ModelFileError(
            f"{path}: learner.attributes.best_iteration is {best}, but the model has "
            f"{num_rounds} rounds"
        )
    if trees == "best" and best is None:
        raise ModelFileError(
            f"{path}: --trees best: the model records no best_iteration (it was not trained "
            "with early stopping); compile all its rounds with --trees all"
        )
    if best is None or best + 1 == num_rounds:
        return num_rounds
    if trees == "all":
        _log.warning(
            "note: %s records early stopping at round %d of %d: compiling all %d rounds, as "
            "Booster.predict does; the scikit-learn wrapper (XGBRegressor.predict, ...) "
            "predicts with the first %d only: --trees best compiles those",
            path.name, best, num_rounds, num_rounds, best + 1,
        )  # fmt: skip
        return num_rounds
    _log.warning(
        "note: %s: compiling the first %d of %d rounds (--trees best: early stopping's "
        "best_iteration %d), as the scikit-learn wrapper predicts; Booster.predict uses all %d",
        path.name, best + 1, num_rounds, best, num_rounds,
    )  # fmt: skip
    return best + 1


def _treelite_model(path: Path, booster: Any) -> Any:
    """Treelite's model of ``booster``'s trees, read from XGBoost's UBJSON re-save of it."""
    treelite = require("treelite")
    with tempfile.TemporaryFile() as captured:
        try:
            with native_output_to(captured):
                return treelite.frontend.from_xgboost_ubjson(booster.save_raw(raw_format="ubj"))
        except treelite.TreeliteError as exc:
            raise ModelFileError(f"{path}: Treelite cannot load it: {first_line(exc)}") from None
        finally:
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                _log.debug("treelite: %s", line)


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
    path: Path, objective: str, treelite_postprocessor: str, leaf_shape: tuple[int, ...]
) -> None:
    """What compile/model_file.py checked in the document, checked again in what Treelite
    made of it: a difference means a format neither expected."""
    expected = OBJECTIVES[objective]
    if _TREELITE_POSTPROCESSOR.get(expected, expected) != treelite_postprocessor:
        raise UnsupportedModelError(
            f"{path}: objective {objective} should map to transform {expected!r}, "
            f"but Treelite reports {treelite_postprocessor!r}"
        )
    if leaf_shape != (1, 1):
        raise UnsupportedModelError(
            f"{path}: vector-leaf trees (multi_strategy=multi_output_tree, leaf shape "
            f"{leaf_shape}) are not supported; train with multi_strategy=one_output_per_tree"
        )

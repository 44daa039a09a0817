"""Build host side of edgeboost: XGBoost booster -> C -> per-target libraries -> bundle.

Needs the ``compile`` extra (xgboost-cpu, treelite, tl2cgen, numpy).
"""

from .bundle import ALL_TARGETS, BACKENDS, DEFAULT_BACKEND, compile_bundle, resolve_targets
from .errors import (
    MissingExtraError,
    PackagingError,
    ParityError,
    ToolchainError,
    UnsupportedModelError,
)
from .source import OBJECTIVES, SourceModel, load_source_model

__all__ = [
    "ALL_TARGETS",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "OBJECTIVES",
    "MissingExtraError",
    "PackagingError",
    "ParityError",
    "SourceModel",
    "ToolchainError",
    "UnsupportedModelError",
    "compile_bundle",
    "load_source_model",
    "resolve_targets",
]

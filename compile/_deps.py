"""Import the heavy host-side libraries with an error that says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

_INSTALL = {
    "xgboost": "pip install 'edgeboost[compile]'  (installs xgboost-cpu)",
    "treelite": "pip install 'edgeboost[compile]'",
    "tl2cgen": "pip install 'edgeboost[compile]'",
    "numpy": "pip install 'edgeboost[compile]'",
    "sklearn": "pip install 'edgeboost[train]'",
}


def require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = _INSTALL.get(module.split(".")[0], "pip install 'edgeboost[dev]'")
        raise MissingExtraError(f"{module} is needed here but not installed: {hint}") from exc

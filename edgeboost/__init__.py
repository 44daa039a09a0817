"""edgeboost: XGBoost models compiled into small, verified native libraries for IoT devices.

The pipeline lives in subpackages: ``edgeboost.compile`` (build host), ``edgeboost.runtime``
(device, needs only cffi), ``edgeboost.broker`` (local Greengrass IPC, stdlib only).
``Model`` is re-exported here lazily, so importing a subpackage never loads the others.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Model", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Model":
        from edgeboost.runtime import Model

        return Model
    if name == "__version__":
        # pyproject.toml is the one place of the version; read on demand, as importlib.metadata
        # costs start-up time, and a device's zip has no package metadata at all.
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("edgeboost")
        except PackageNotFoundError:
            return "unknown (not installed: a device's copy)"
    raise AttributeError(f"module 'edgeboost' has no attribute {name!r}")

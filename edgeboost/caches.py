"""Where the build host's tools keep what they download or build between runs.

Host side only (never shipped to devices): the emulated Debian userlands, nucleus lite's
build, the Lambda zip's cffi wheels.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(name: str, override_env: str | None = None) -> Path:
    """$override_env when set, else $XDG_CACHE_HOME (or ~/.cache)/edgeboost/``name``."""
    explicit = os.environ.get(override_env) if override_env else None
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeboost" / name

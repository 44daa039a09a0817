"""The device's copy of edgeboost: the runtime, the ABI header and the CLI, nothing else.

This is what goes into a Greengrass component's zip and onto emulated ARM Pythons: no
compile/, no broker, no xgboost or numpy. It is read from the installed packages, so it is
the same code the host runs.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

__all__ = ["copy_runtime_tree", "runtime_files"]

# package -> file patterns shipped to devices
_DEVICE_PACKAGES = {
    "edgeboost": ("__init__.py", "__main__.py", "cli.py"),
    "edgeboost.runtime": ("*.py",),
    "edgeboost.native": ("__init__.py", "edgeboost.h"),
}


def runtime_files() -> dict[str, Path]:
    """Archive name (``edgeboost/runtime/model.py``) -> file on this machine, sorted."""
    files = {}
    for package, patterns in _DEVICE_PACKAGES.items():
        folder = Path(str(resources.files(package)))
        for pattern in patterns:
            for path in sorted(folder.glob(pattern)):
                files["/".join([*package.split("."), path.name])] = path
    return dict(sorted(files.items()))


def copy_runtime_tree(destination: str | Path) -> Path:
    """Copy the device files under ``destination``; put it on PYTHONPATH to import edgeboost."""
    destination = Path(destination)
    for name, source in runtime_files().items():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return destination

"""The device side runs with nothing but cffi: no numpy, no xgboost, no compile/."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

import _cffi_backend
import pytest

from edgeboost.compile.runtime_tree import copy_runtime_tree, runtime_files

from .conftest import OLD_MODEL_EXPECTED, need

BANNED = ("numpy", "xgboost", "treelite", "tl2cgen", "edgeboost.compile", "edgeboost.broker")


def _imports(tree: ast.AST, *, top_level_only: bool) -> set[str]:
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_device_tree_holds_only_the_runtime() -> None:
    files = runtime_files()
    assert "edgeboost/runtime/model.py" in files
    assert "edgeboost/native/edgeboost.h" in files
    assert not any(n.startswith(("edgeboost/compile", "edgeboost/broker")) for n in files)
    for name, path in files.items():
        if not name.endswith(".py"):
            continue
        # The runtime never imports host-side code; the CLI may, lazily, inside host commands.
        in_runtime = name.startswith("edgeboost/runtime/")
        imported = _imports(ast.parse(path.read_text()), top_level_only=not in_runtime)
        bad = {m for m in imported if m.startswith(BANNED)}
        if in_runtime:
            bad -= {"numpy"}  # imported lazily, only when the caller passes numpy arrays
        assert not bad, f"{name} imports {sorted(bad)}"


def _newer_than_3_9(tree: ast.Module) -> list[str]:
    """Calls that parse on Python 3.9 but fail there when run (ruff only checks syntax)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        keywords = {k.arg for k in node.keywords}
        if name == "zip" and "strict" in keywords:
            found.append(f"line {node.lineno}: zip(strict=...)")
        if name == "dataclass" and keywords & {"slots", "kw_only", "match_args"}:
            found.append(f"line {node.lineno}: dataclass({', '.join(sorted(keywords))})")
        if name in ("isinstance", "issubclass") and isinstance(node.args[-1], ast.BinOp):
            found.append(f"line {node.lineno}: {name}(x, A | B)")
    return found


def test_device_tree_has_no_3_10_only_calls() -> None:
    """The device minimum is 3.9 (MIN_PYTHON): each of these once stopped the runtime there."""
    for name, path in runtime_files().items():
        if name.endswith(".py"):
            assert not _newer_than_3_9(ast.parse(path.read_text())), name


def test_the_3_10_only_calls_are_recognised() -> None:
    source = (
        "@dataclass(frozen=True, slots=True)\nclass A: ...\n"
        "zip(a, b, strict=True)\nisinstance(v, bytes | bytearray)\n"
    )
    assert len(_newer_than_3_9(ast.parse(source))) == 3


@pytest.fixture(scope="session")
def cffi_only_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with cffi and nothing else (pip install from the registry)."""
    root = tmp_path_factory.mktemp("cffi-only-venv")
    venv.create(root, with_pip=True, clear=True)
    python = root / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "cffi"],
        capture_output=True,
        text=True,
    )
    need(result.returncode == 0, f"pip install cffi in a fresh venv ({result.stderr[-300:]})")
    return python


def test_predict_without_numpy(
    cffi_only_python: Path, old_bundle: Path, shared_data: Path, tmp_path: Path
) -> None:
    tree = copy_runtime_tree(tmp_path / "device")
    script = (
        "import json, sys\n"
        "try:\n"
        "    import numpy\n"
        "    sys.exit('numpy is importable: the test would prove nothing')\n"
        "except ImportError:\n"
        "    pass\n"
        "from edgeboost.runtime import Model\n"
        "model = Model.load(sys.argv[1])\n"
        "rows = json.load(open(sys.argv[2]))\n"
        "print(json.dumps(model.predict(rows)))\n"
        "banned = [m for m in ('numpy', 'xgboost', 'treelite', 'tl2cgen') if m in sys.modules]\n"
        "assert not banned, banned\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tree), "PYTHONNOUSERSITE": "1"}
    result = subprocess.run(
        [str(cffi_only_python), "-c", script, str(old_bundle), str(shared_data / "samples.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == OLD_MODEL_EXPECTED


def test_cli_predict_on_the_device_tree(
    old_bundle: Path, shared_data: Path, tmp_path: Path, compile_once: Callable[..., Path]
) -> None:
    tree = copy_runtime_tree(tmp_path / "device")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeboost",
            "predict",
            str(old_bundle),
            str(shared_data / "samples.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == OLD_MODEL_EXPECTED


# What `edgeboost serve` must not import on a device, with what each cost there (RSS after
# import, Debian's python3 3.11, x86_64): the 16 MiB budget of a serving process is met by
# leaving them out (README "Memory").
_HEAVY_MODULES = {
    "dataclasses": "1.1 MiB with inspect, ast and dis: runtime/records.py instead",
    "inspect": "with dataclasses",
    "pathlib": "0.6 MiB with urllib and ipaddress: os.path instead",
    "shutil": "0.5 MiB with bz2 and lzma: argparse's width asked of os instead",
    "typing": "1.0 MiB: TYPE_CHECKING = False instead",
    "hashlib": "3.7 MiB with OpenSSL: _sha256 instead",
    "uuid": "0.4 MiB",
    "platform": "0.4 MiB",
    "cffi": "2.3 MiB with pycparser: runtime/_abi.py instead",
}


def test_serve_imports_nothing_heavy(shipped_bundle: Path, tmp_path: Path) -> None:
    tree = copy_runtime_tree(tmp_path / "device")
    probe = (
        "import sys\n"
        "from edgeboost.cli import _parser\n"
        f"args = _parser().parse_args(['serve', {str(shipped_bundle)!r}])\n"
        "import edgeboost.runtime.component, edgeboost.runtime.ipc_transport, signal\n"
        "from edgeboost.runtime import Model\n"
        "model = Model.load(args.bundle)\n"
        "model.predict([[0.0] * model.num_feature])\n"
        f"print(sorted(set({sorted(_HEAVY_MODULES)!r}) & set(sys.modules)))\n"
    )
    # -S: this venv's .pth files import some of those at start-up; a device has none. cffi's
    # backend is found by path instead.
    site_packages = os.path.dirname(str(_cffi_backend.__file__))
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{tree}:{site_packages}"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    imported = result.stdout.split("\n")[0]
    assert imported == "[]", {m: _HEAVY_MODULES[m] for m in eval(imported)}

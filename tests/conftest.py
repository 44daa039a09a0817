"""Shared fixtures: where ../shared is, tool requirements, and bundles compiled once per session.

Rule for anything a test needs from outside the repo (../shared, cross compilers, qemu,
awsiotsdk): skip locally when it is missing, but fail when CI=true or
EDGEBOOST_REQUIRE_TOOLS=1, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Nucleus lite's fixtures (built once, one instance per session) and the IPC server pair, for
# every test module.
pytest_plugins = ["tests.greengrass_lite", "tests.ipc_servers"]
SHIPPED_MODEL = REPO / "models" / "wine-quality" / "model.json"
OLD_MODEL_EXPECTED = [6.573914051055908, 4.869720935821533]
NAMES = ["temp", "humidity", "pressure", "wind speed"]


def tools_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("EDGEBOOST_REQUIRE_TOOLS") == "1"


def need(condition: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) unless ``condition`` holds."""
    if condition:
        return
    if tools_required():
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} is missing (set EDGEBOOST_REQUIRE_TOOLS=1 to make this a failure)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the raw CSVs, the old model and samples.json."""
    data = SHARED / "data"
    need(data.is_dir(), f"{data} (the shared data folder)")
    return data


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def compile_once(build_dir: Path) -> Callable[..., Path]:
    """compile(model_path, name, targets, backend) -> bundle path, cached per (path, targets,
    backend) for the session; backend None is compile_bundle's default."""
    from edgeboost.compile import compile_bundle

    cache: dict[tuple[str, tuple[str, ...], str | None], Path] = {}

    def compile_model(
        model: Path, name: str, targets: tuple[str, ...] = ("host",), backend: str | None = None
    ) -> Path:
        key = (str(model), targets, backend)
        if key not in cache:
            out = build_dir / (name if backend is None else f"{name}-{backend}")
            options = {} if backend is None else {"backend": backend}
            compile_bundle(
                model, out, targets=targets, name=name, progress=lambda _: None, **options
            )
            cache[key] = out
        return cache[key]

    return compile_model


@pytest.fixture(scope="session")
def old_bundle(shared_data: Path, compile_once: Callable[..., Path]) -> Path:
    return compile_once(shared_data / "xgboost_wine_quality.json", "old-wine")


@pytest.fixture(scope="session")
def shipped_bundle(compile_once: Callable[..., Path]) -> Path:
    assert SHIPPED_MODEL.exists(), f"the shipped model {SHIPPED_MODEL} is missing"
    return compile_once(SHIPPED_MODEL, "wine-quality")


@pytest.fixture(scope="session")
def named_bundle(
    tmp_path_factory: pytest.TempPathFactory, compile_once: Callable[..., Path]
) -> tuple[Path, object]:
    """A small regressor with feature names, trained with missing values; and its booster."""
    import xgboost as xgb

    rng = np.random.default_rng(3)
    x = rng.normal(size=(800, 4)).astype(np.float32)
    y = x[:, 0] * 2 - x[:, 3]
    x[rng.random(x.shape) < 0.1] = np.nan
    dtrain = xgb.DMatrix(x, label=y, feature_names=NAMES)
    booster = xgb.train({"max_depth": 4, "seed": 0, "nthread": 1}, dtrain, 25)
    path = tmp_path_factory.mktemp("named") / "sensors.json"
    booster.save_model(path)
    return compile_once(path, "sensors"), booster

"""Parity on every target (TL2cgen backend; the kernel has tests/test_kernel_backend.py): the
aarch64 and armv7 libraries under qemu-user, and the real
target Python (Debian bookworm python3 + python3-cffi) running edgeboost.runtime.

Needs gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf (with their libc6-dev-*-cross),
qemu-user-static, and a Debian archive apt can reach (compile/debian.py). Skips
locally when those are missing; fails in CI (see conftest.need). The drivers and userlands
are cached in ~/.cache/edgeboost/emulation, so only the first run on a machine downloads anything.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgeboost.compile import load_source_model
from edgeboost.compile.emulation import (
    EmulationError,
    build_driver,
    default_cache_dir,
    prepare_python_root,
    qemu_prefix,
    run_library,
    run_python,
)
from edgeboost.compile.parity import compare_outputs
from edgeboost.runtime.targets import TARGETS

from .compiled_case import CompiledCase, with_tool
from .conftest import OLD_MODEL_EXPECTED, REPO, need
from .zoo import train

# Outside the checkout, so that CI (a fresh clone each time) reuses it on the same machine.
CACHE = default_cache_dir()
PROBE = Path(__file__).resolve().parent / "_probe_cross.py"
REFERENCE_TARGET = "x86_64-linux-gnu"
EMULATED = ("aarch64-linux-gnu", "armv7-linux-gnueabihf")
DRIVER_ROWS = 100_000
RUNTIME_ROWS = 20_000
# readelf -h lines each library must show.
ELF_HEADER = {
    "x86_64-linux-gnu": ("ELF64", "Advanced Micro Devices X86-64"),
    "aarch64-linux-gnu": ("ELF64", "AArch64"),
    "armv7-linux-gnueabihf": ("ELF32", "ARM", "Version5 EABI", "hard-float ABI"),
}
# platform.machine() of the emulated Python.
MACHINE = {"aarch64-linux-gnu": "aarch64", "armv7-linux-gnueabihf": "armv7l"}


@pytest.fixture(scope="session")
def drivers() -> dict[str, Path]:
    """The parity driver for every target; proves the cross compilers and their libc work."""
    return {
        t: with_tool(f"a C toolchain for {t}", lambda t=t: build_driver(t, CACHE)) for t in TARGETS
    }


@pytest.fixture(scope="session")
def python_root() -> Callable[[str], Path]:
    """python_root(triple) -> the bookworm userland for it (cached on disk across runs)."""

    def get(triple: str) -> Path:
        what = f"a bookworm {triple} userland"
        try:
            return with_tool(what, lambda: prepare_python_root(triple, CACHE))
        except EmulationError as exc:  # no route to the Debian mirror, broken apt lists
            need(False, f"{what} [{exc}]")
            raise

    return get


@pytest.fixture(scope="session")
def runtime_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder to put on the emulated PYTHONPATH: edgeboost/{__init__, runtime, native}."""
    folder = tmp_path_factory.mktemp("device-site")
    package = folder / "edgeboost"
    package.mkdir()
    shutil.copyfile(REPO / "edgeboost" / "__init__.py", package / "__init__.py")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "runtime", package / "runtime", ignore=skip)
    shutil.copytree(REPO / "native", package / "native", ignore=skip)
    return folder


@pytest.fixture(scope="session")
def wine_case(
    shared_data: Path, drivers: dict[str, Path], compile_once: Callable[..., Path]
) -> CompiledCase:
    model = shared_data / "xgboost_wine_quality.json"
    bundle = compile_once(model, "cross-old-wine", ("all",), backend="tl2cgen")
    return CompiledCase(
        "old wine (reg:squarederror)", load_source_model(model), bundle, DRIVER_ROWS, seed=3
    )


@pytest.fixture(scope="session")
def logistic_case(
    tmp_path_factory: pytest.TempPathFactory,
    drivers: dict[str, Path],
    compile_once: Callable[..., Path],
) -> CompiledCase:
    """binary:logistic with 15% missing values in training: default directions and sigmoid."""
    model = train("binary_logistic", tmp_path_factory.mktemp("cross-model"), rounds=12)
    bundle = compile_once(model, "cross-binary-logistic", ("all",), backend="tl2cgen")
    return CompiledCase(
        "binary:logistic with NaN", load_source_model(model), bundle, DRIVER_ROWS, seed=3
    )


CASES = [pytest.param("wine_case", marks=pytest.mark.needs_shared), "logistic_case"]


@pytest.fixture(scope="session", params=CASES)
def case(request: pytest.FixtureRequest) -> CompiledCase:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def reference_library_outputs(case: CompiledCase) -> dict[str, np.ndarray]:
    library = case.library(REFERENCE_TARGET)
    margin, value = run_library(REFERENCE_TARGET, library, case.rows, cache_dir=CACHE)
    return {"margin": margin, "value": value}


@pytest.mark.parametrize("triple", list(ELF_HEADER))
def test_library_is_built_for_its_target(case: CompiledCase, triple: str) -> None:
    need(shutil.which("readelf") is not None, "readelf (apt-get install binutils)")
    header = subprocess.run(
        ["readelf", "-h", str(case.library(triple))], capture_output=True, text=True, check=True
    ).stdout
    for expected in ELF_HEADER[triple]:
        assert expected in header, f"{triple}: readelf -h lacks {expected!r}:\n{header}"


@pytest.mark.slow
@pytest.mark.parametrize("triple", list(TARGETS))
def test_driver_margins_bit_identical_to_xgboost(
    case: CompiledCase, triple: str, reference_library_outputs: dict[str, np.ndarray]
) -> None:
    with_tool(f"qemu for {triple}", lambda: qemu_prefix(triple))
    margin, value = run_library(triple, case.library(triple), case.rows, cache_dir=CACHE)
    ours = {"margin": margin, "value": value}
    report = compare_outputs(ours, case.reference, label="xgboost")
    host = compare_outputs(ours, reference_library_outputs, label=REFERENCE_TARGET)
    summary = (
        f"{triple}, {case.name}, {report.rows:,} rows: vs XGBoost {report.margin_mismatched_rows} "
        f"margins differ (max {report.max_abs_margin_difference:.3g}), values within "
        f"{report.max_ulp_transformed} ULP; vs the {REFERENCE_TARGET} library "
        f"{host.margin_mismatched_rows} margins differ, values within "
        f"{host.max_ulp_transformed} ULP"
    )
    assert report.rows >= DRIVER_ROWS, summary
    assert report.margin_mismatched_rows == 0, summary
    assert report.max_ulp_transformed <= 1, summary
    assert host.margin_mismatched_rows == 0, summary
    assert host.max_ulp_transformed <= 1, summary


def _run_probe(
    triple: str, root: Path, runtime_path: Path, bundle: Path, *extra: str
) -> dict[str, object]:
    result = run_python(
        triple,
        root,
        [str(PROBE), str(bundle), "--target", triple, *extra],
        pythonpath=[runtime_path],
    )
    assert result.returncode == 0, f"{triple} python failed:\n{result.stderr}"
    report: dict[str, object] = json.loads(result.stdout)
    # The runtime must really be the device's: its Python, its cffi, our copy of edgeboost.
    assert report["machine"] == MACHINE[triple], report
    assert str(report["python"]).startswith("3.11."), report
    assert Path(str(report["cffi"])).is_relative_to(root), report
    assert Path(str(report["edgeboost"])).is_relative_to(runtime_path), report
    return report


@pytest.mark.needs_shared
@pytest.mark.parametrize("triple", EMULATED)
def test_emulated_python_predicts_the_recorded_samples(
    triple: str,
    wine_case: CompiledCase,
    shared_data: Path,
    python_root: Callable[[str], Path],
    runtime_path: Path,
) -> None:
    root = python_root(triple)
    samples = str(shared_data / "samples.json")
    report = _run_probe(triple, root, runtime_path, wine_case.bundle, "--samples", samples)
    assert report["samples"] == OLD_MODEL_EXPECTED, f"{triple}: {report}"


@pytest.mark.parametrize("triple", EMULATED)
def test_emulated_python_bit_identical_to_xgboost(
    triple: str,
    case: CompiledCase,
    python_root: Callable[[str], Path],
    runtime_path: Path,
    tmp_path: Path,
) -> None:
    root = python_root(triple)
    rows = case.rows[:RUNTIME_ROWS]
    rows_file, out_file = tmp_path / "rows.f32", tmp_path / "out.f32"
    rows_file.write_bytes(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    extra = ("--rows", str(rows_file), "--out", str(out_file))
    report = _run_probe(triple, root, runtime_path, case.bundle, *extra)
    assert report["rows"] == len(rows)
    margin, value = np.split(np.fromfile(out_file, dtype="<f4").astype(np.float32), 2)
    reference = {k: v[: len(rows)] for k, v in case.reference.items()}
    parity = compare_outputs({"margin": margin, "value": value}, reference, label="xgboost")
    assert parity.exact, (
        f"{triple} python + cffi, {case.name}: {parity.margin_mismatched_rows} of {len(rows):,} "
        f"margins differ from XGBoost, values within {parity.max_ulp_transformed} ULP"
    )


@pytest.mark.needs_shared
@pytest.mark.parametrize("triple", EMULATED)
def test_platform_zip_alone_predicts_on_the_target_python(
    triple: str,
    wine_case: CompiledCase,
    shared_data: Path,
    python_root: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    """What Greengrass deploys: the runtime zip and the model zip unzipped into empty folders,
    the CLI run from the one on the other, on the device's python3."""
    from edgeboost.recipes import ComponentOptions, package_bundle

    root = python_root(triple)
    options = ComponentOptions(name="com.example.WineQuality", version="1.0.0")
    package = package_bundle(wine_case.bundle, tmp_path / "greengrass-build", options)
    assert package.runtime is not None and package.model is not None
    runtime, model = tmp_path / "runtime", tmp_path / "model"
    with zipfile.ZipFile(package.runtime.zips[triple]) as archive:
        archive.extractall(runtime)
    with zipfile.ZipFile(package.model.zips[triple]) as archive:
        archive.extractall(model)
    samples = str(shared_data / "samples.json")
    result = run_python(
        triple,
        root,
        ["-m", "edgeboost", "predict", str(model), samples],
        pythonpath=[runtime],
        cwd=runtime,
    )
    assert result.returncode == 0, f"{triple}:\n{result.stderr}"
    assert json.loads(result.stdout) == OLD_MODEL_EXPECTED, result.stdout

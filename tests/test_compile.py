"""The compile step's refusals and error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from edgeboost.compile import ParityError, ToolchainError, UnsupportedModelError, compile_bundle
from edgeboost.compile.source import sniff_format
from edgeboost.compile.toolchain import TOOLCHAINS, LibraryJob, build_libraries
from edgeboost.runtime import Manifest, Model

from .compiled_case import with_tool
from .conftest import need


def _train(tmp_path: Path, params: dict, name: str = "m.json", **dmatrix: object) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    label = rng.integers(0, 3, 200) if params.get("num_class") else x[:, 0]
    booster = xgb.train(params, xgb.DMatrix(x, label=label, **dmatrix), 3)  # type: ignore[arg-type]
    path = tmp_path / name
    booster.save_model(path)
    return path


def test_a_compiler_error_names_command_exit_code_and_stderr(tmp_path: Path) -> None:
    broken = tmp_path / "broken.c"
    broken.write_text("int f(void) { return missing_symbol; }\n")
    job = LibraryJob("x86_64-linux-gnu", (broken,), (), tmp_path / "obj")
    with pytest.raises(ToolchainError) as caught:
        build_libraries([job], workers=1)
    message = str(caught.value)
    assert "command: " in message and "broken.c" in message and "-O2" in message
    assert "exit code: 1" in message
    assert "missing_symbol" in message  # the compiler's own words


def test_a_missing_cross_compiler_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolchainError, match="apt-get install gcc-aarch64-linux-gnu"):
        TOOLCHAINS["aarch64-linux-gnu"].resolve()


def test_unknown_target_is_refused(tmp_path: Path) -> None:
    model = _train(tmp_path, {"objective": "reg:squarederror"})
    with pytest.raises(ToolchainError, match="unknown target 'riscv64'"):
        compile_bundle(model, tmp_path / "b", targets=["riscv64"])


def test_json_and_ubjson_are_told_apart(tmp_path: Path) -> None:
    params = {"objective": "reg:squarederror"}
    assert sniff_format(_train(tmp_path, params, "a.json").read_bytes()) == "xgboost-json"
    assert sniff_format(_train(tmp_path, params, "a.ubj").read_bytes()) == "xgboost-ubjson"
    assert sniff_format(b"binf\x00\x00\x00\x3f") is None  # see tests/test_model_files.py


def test_refuses_to_overwrite_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    model = _train(tmp_path, {"objective": "reg:squarederror"})
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ToolchainError, match="not a bundle"):
        compile_bundle(model, precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_recompiling_replaces_a_bundle_and_records_the_build(tmp_path: Path) -> None:
    model = _train(tmp_path, {"objective": "reg:squarederror"}, feature_names=["a", "b", "c"])
    out = tmp_path / "bundle"
    compile_bundle(model, out, name="first")
    compile_bundle(model, out, name="second")
    manifest = Manifest.read(out)
    assert manifest.model.name == "second"
    assert manifest.feature_names == ("a", "b", "c")
    (library,) = manifest.targets.values()
    assert library.parity is not None and library.parity["margin_mismatched_rows"] == 0
    assert "-ffp-contract=off" in library.flags and "-ffast-math" not in library.flags
    tools = json.loads((out / "manifest.json").read_text())["tools"]
    assert manifest.backend == "kernel" and "tl2cgen" not in tools  # only what shaped it
    assert set(tools) >= {"python", "edgeboost", "treelite"}
    assert not list(tmp_path.glob(".bundle*")), "no staging folders left behind"


def test_cli_backend_choices_are_the_compile_backends() -> None:
    from edgeboost.cli import _parser
    from edgeboost.compile import BACKENDS

    compile_parser = _parser()._subparsers._group_actions[0].choices["compile"]  # type: ignore[union-attr]
    (action,) = [a for a in compile_parser._actions if a.dest == "backend"]
    assert tuple(action.choices) == BACKENDS


def _softmax_with_a_tie(tmp_path: Path) -> Path:
    """multi:softmax over 3 classes whose class-2 trees are copies of the class-1 trees: their
    margins are always equal, so wherever they lead XGBoost must answer the first, 1."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    label = np.digitize(x[:, 0], [-0.5, 0.5])
    params = {"objective": "multi:softmax", "num_class": 3, "max_depth": 3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=label), 4)
    doc = json.loads(bytes(booster.save_raw("json")))
    model = doc["learner"]["gradient_booster"]["model"]
    trees, klass = model["trees"], model["tree_info"]
    for i, tree in enumerate(trees):
        if klass[i] == 2:
            trees[i] = {**trees[i - 1], "id": tree["id"]}
    # XGBoost 3.1+ keeps one base score per class (the class priors): tie those two as well.
    param = doc["learner"]["learner_model_param"]
    base = param["base_score"].strip("[]").split(",")
    if len(base) == 3:
        param["base_score"] = f"[{base[0]},{base[1]},{base[1]}]"
    path = tmp_path / "softmax.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("backend", ["kernel", "tl2cgen"])
def test_multi_softmax_gives_the_class_index_as_xgboost_does(tmp_path: Path, backend: str) -> None:
    from edgeboost.compile.parity import parity_rows, reference_predictions
    from edgeboost.compile.source import load_source_model

    path = _softmax_with_a_tie(tmp_path)
    manifest = compile_bundle(path, tmp_path / "b", backend=backend, progress=lambda _: None)
    assert (manifest.objective, manifest.postprocessor, manifest.num_output) == (
        "multi:softmax",
        "max_index",
        3,
    )
    model = Model.load(tmp_path / "b")
    source = load_source_model(path)
    rows = parity_rows(source, 5_000, seed=4)
    margin, value = reference_predictions(source.booster(), rows)
    tied = (margin[:, 1] == margin[:, 2]) & (margin[:, 1] > margin[:, 0])
    assert tied.sum() > 100 and (value[tied] == 1).all()  # the first of equal margins
    ours = model.predict(rows)
    assert (ours.shape, ours.dtype) == ((5_000,), np.float32)
    assert ours.tobytes() == value.tobytes()
    assert model.predict(rows, margin=True).tobytes() == margin.tobytes()
    # Lists: one float per row, margins as lists of 3; single rows take another path in C.
    assert model.predict(rows[:3].tolist()) == value[:3].tolist()
    assert model.predict(rows[:1].tolist()) == value[:1].tolist()
    assert model.predict(rows[:1].tolist(), margin=True) == margin[:1].tolist()
    assert model.predict(rows[:5], margin=True).shape == (5, 3)


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """An XGBRegressor fitted with early stopping: its file keeps the rounds after the best."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    y = x[:, 0] + rng.normal(scale=1.0, size=600)
    model = xgb.XGBRegressor(
        n_estimators=300, learning_rate=0.3, max_depth=4, early_stopping_rounds=10, n_jobs=1
    )
    model.fit(x[:400], y[:400], eval_set=[(x[400:], y[400:])], verbose=False)
    path = tmp_path_factory.mktemp("early") / "early.json"
    model.save_model(path)
    booster = model.get_booster()
    assert model.best_iteration + 11 == booster.num_boosted_rounds() < 300
    return path, model


def _trees_record(bundle: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())["trees"]
    return record


def test_early_stopping_compiles_all_rounds_by_default_and_says_so(
    early_stopped: tuple[Path, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, model = early_stopped
    best, rounds = model.best_iteration, model.get_booster().num_boosted_rounds()
    with caplog.at_level("WARNING", logger="edgeboost.compile.source"):
        manifest = compile_bundle(path, tmp_path / "b", progress=lambda _: None)
    assert caplog.messages == [
        f"note: early.json records early stopping at round {best} of {rounds}: compiling all "
        f"{rounds} rounds, as Booster.predict does; the scikit-learn wrapper "
        f"(XGBRegressor.predict, ...) predicts with the first {best + 1} only: --trees best "
        "compiles those"
    ]
    assert _trees_record(tmp_path / "b") == {
        "selection": "all",
        "iteration_range": [0, rounds],
        "num_rounds": rounds,
        "best_iteration": best,
    }
    assert manifest.num_tree == rounds
    rows = np.random.default_rng(1).normal(size=(500, 4)).astype(np.float32)
    ours = Model.load(tmp_path / "b").predict(rows)
    assert ours.tobytes() == model.get_booster().inplace_predict(rows).tobytes()
    assert ours.tobytes() != model.predict(rows).tobytes()  # what --trees best is for


@pytest.mark.parametrize("backend", ["kernel", "tl2cgen"])
def test_trees_best_compiles_what_the_sklearn_wrapper_predicts(
    early_stopped: tuple[Path, Any], tmp_path: Path, backend: str
) -> None:
    path, model = early_stopped
    best, rounds = model.best_iteration, model.get_booster().num_boosted_rounds()
    bundle = tmp_path / "b"
    manifest = compile_bundle(path, bundle, trees="best", backend=backend, progress=lambda _: None)
    assert _trees_record(bundle) == {
        "selection": "best",
        "iteration_range": [0, best + 1],
        "num_rounds": rounds,
        "best_iteration": best,
    }
    assert manifest.num_tree == best + 1
    (library,) = manifest.targets.values()
    assert library.parity is not None
    assert library.parity["reference"].endswith(f"inplace_predict iteration_range=(0, {best + 1})")
    rows = np.random.default_rng(1).normal(size=(500, 4)).astype(np.float32)
    model_out = Model.load(bundle)
    assert model_out.predict(rows).tobytes() == model.predict(rows).tobytes()


def test_trees_best_needs_a_recorded_best_iteration(tmp_path: Path) -> None:
    path = _train(tmp_path, {"objective": "reg:squarederror"})
    with pytest.raises(UnsupportedModelError) as caught:
        compile_bundle(path, tmp_path / "b", trees="best")
    assert str(caught.value) == (
        f"{path}: --trees best: the model records no best_iteration (it was not trained with "
        "early stopping); compile all its rounds with --trees all"
    )


def test_cli_trees_choices_are_the_compile_choices() -> None:
    from edgeboost.cli import _parser
    from edgeboost.compile.source import TREE_CHOICES

    compile_parser = _parser()._subparsers._group_actions[0].choices["compile"]  # type: ignore[union-attr]
    (action,) = [a for a in compile_parser._actions if a.dest == "trees"]
    assert tuple(action.choices) == TREE_CHOICES and action.default == "all"


EMULATED = ("aarch64-linux-gnu", "armv7-linux-gnueabihf")


def _need_cross_compilers() -> None:
    for triple in EMULATED:
        try:
            TOOLCHAINS[triple].resolve()
        except ToolchainError as exc:
            need(False, f"the {triple} cross compiler [{exc}]")


def test_target_all_verifies_every_target(tmp_path: Path) -> None:
    from edgeboost.compile.emulation import qemu_prefix

    _need_cross_compilers()
    for triple in EMULATED:
        with_tool(f"qemu for {triple}", lambda triple=triple: qemu_prefix(triple))
    path = _train(tmp_path, {"objective": "multi:softmax", "num_class": 3})
    said: list[str] = []
    manifest = compile_bundle(path, tmp_path / "b", targets=["all"], progress=said.append)
    assert set(manifest.targets) == {"x86_64-linux-gnu", *EMULATED}
    for triple, library in manifest.targets.items():
        parity = library.parity
        assert parity is not None and parity["verified"] is True, triple
        assert (parity["rows"], parity["margin_mismatched_rows"]) == (4096, 0), triple
        method = "qemu-user, native/parity_driver.c" if triple in EMULATED else "in process"
        assert parity["method"].startswith(method), triple
        assert (
            f"verified {triple} against xgboost {xgb.__version__} inplace_predict: 4096 rows, "
            f"margins bit-identical ({parity['method']})"
        ) in said


def test_without_qemu_the_manifest_says_not_verified_and_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from edgeboost.compile import emulation

    _need_cross_compilers()
    which = shutil.which
    monkeypatch.setattr(
        emulation.shutil, "which", lambda name: None if name.startswith("qemu") else which(name)
    )
    path = _train(tmp_path, {"objective": "reg:squarederror"})
    said: list[str] = []
    manifest = compile_bundle(path, tmp_path / "b", targets=["all"], progress=said.append)
    assert manifest.targets["x86_64-linux-gnu"].parity["verified"] is True  # type: ignore[index]
    for triple, qemu in zip(EMULATED, ("qemu-aarch64-static", "qemu-arm-static"), strict=True):
        reason = (
            f"{qemu} is not on PATH (needed to run {triple} code here); install it with: "
            "apt-get install qemu-user-static"
        )
        assert manifest.targets[triple].parity == {
            "verified": False,
            "reason": reason,
            "to_verify": "apt-get install qemu-user-static (and the target's "
            "libc6-dev-*-cross), then run edgeboost compile again",
        }
        assert f"{triple}: not verified: {reason}; then compile again to verify it" in said
    assert Manifest.read(tmp_path / "b").targets[EMULATED[0]].parity == (
        manifest.targets[EMULATED[0]].parity
    )


def test_a_target_that_disagrees_with_xgboost_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeboost.compile import emulation
    from edgeboost.compile.parity import parity_rows, reference_predictions
    from edgeboost.compile.source import load_source_model

    _need_cross_compilers()
    path = _train(tmp_path, {"objective": "reg:squarederror"})
    source = load_source_model(path)
    reference = reference_predictions(source.booster(), parity_rows(source, 4096, seed=0))

    def off_by_one_ulp(triple: str, library: Path, rows: np.ndarray, **kwargs: Any) -> Any:
        margin, value = reference
        nudged = margin.copy()
        nudged[7] = np.nextafter(nudged[7], np.float32(np.inf))
        return nudged, value

    monkeypatch.setattr(emulation, "run_library", off_by_one_ulp)
    with pytest.raises(ParityError) as caught:
        compile_bundle(path, tmp_path / "b", targets=["all"], progress=lambda _: None)
    gap = float(np.nextafter(reference[0][7], np.float32(np.inf))) - float(reference[0][7])
    assert str(caught.value) == (
        "aarch64-linux-gnu library disagrees with XGBoost on 1 of 4096 rows (max margin "
        f"difference {gap:.3g}, max 0 ULP after the transform); bundle not written"
    )
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


@pytest.mark.parametrize(("backend", "source"), [("kernel", "forest_kernel.c"), ("tl2cgen", None)])
def test_the_c_refuses_a_fast_math_build(
    named_bundle: tuple[Path, object], tmp_path: Path, backend: str, source: str | None
) -> None:
    """-ffast-math removes isnan and reorders float adds: a build with it must not compile."""
    import subprocess

    from edgeboost.compile import compile_bundle

    booster = named_bundle[1]
    model = tmp_path / "model.json"
    booster.save_model(model)  # type: ignore[attr-defined]
    sources = tmp_path / "sources"
    compile_bundle(
        model,
        tmp_path / "bundle",
        backend=backend,
        keep_sources=sources,
        verify=False,
        progress=lambda _: None,
    )
    native = Path(__file__).resolve().parents[1] / "native"
    adapter = source or "tl2cgen_adapter.c"
    found = sorted(sources.rglob(adapter)) or [native / adapter]
    result = subprocess.run(
        [
            "gcc",
            "-ffast-math",
            "-fsyntax-only",
            "-I",
            str(native),
            "-I",
            str(found[0].parent),
            *[f"-I{p.parent}" for p in sources.rglob("*.h")],
            str(found[0]),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "must not be built with -ffast-math" in result.stderr, result.stderr

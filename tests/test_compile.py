"""The compile step's refusals and error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from edgeboost.compile import ToolchainError, UnsupportedModelError, compile_bundle
from edgeboost.compile.source import sniff_format
from edgeboost.compile.toolchain import TOOLCHAINS, LibraryJob, build_libraries
from edgeboost.runtime import Manifest, Model


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
    from edgeboost.compile import BACKENDS

    from edgeboost.cli import _parser

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
    from edgeboost.compile.source import TREE_CHOICES

    from edgeboost.cli import _parser

    compile_parser = _parser()._subparsers._group_actions[0].choices["compile"]  # type: ignore[union-attr]
    (action,) = [a for a in compile_parser._actions if a.dest == "trees"]
    assert tuple(action.choices) == TREE_CHOICES and action.default == "all"

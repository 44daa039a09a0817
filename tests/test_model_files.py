"""What users bring: every model file that cannot be compiled is refused in one line that names
the file and, where it applies, the key, tree or feature; no traceback without --debug.

tests/fixtures/models holds files this repository's XGBoost cannot write (pre-1.6 JSON, the
legacy binary format, categorical models of XGBoost 1.7, 2.1 and 3.2); make_fixtures.py there
says how they were made.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from edgeboost.cli import main
from edgeboost.compile import UnsupportedModelError, load_source_model

from .conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "models"
CATEGORICAL = "feature 'colour' (column 1) is categorical, split on in tree 0; edgeboost compiles "
CATEGORICAL += "numerical splits only: one-hot encode it and retrain"


def _booster(params: dict[str, Any] | None = None, rounds: int = 2, **dmatrix: Any) -> Any:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    label = rng.integers(0, 3, 200) if (params or {}).get("num_class") else x[:, 0]
    data = xgb.DMatrix(x, label=label, **dmatrix)
    params = {"nthread": 1, **(params or {})}
    if params.get("booster") != "gblinear":  # which warns that it has no max_depth
        params.setdefault("max_depth", 2)
    return xgb.train(params, data, rounds)


def _doc() -> dict[str, Any]:
    """A small model's JSON document, to break in one place."""
    doc: dict[str, Any] = json.loads(bytes(_booster().save_raw("json")))
    return doc


def _refusal(path: Path) -> str:
    with pytest.raises(UnsupportedModelError) as caught:
        load_source_model(path)
    message = str(caught.value)
    assert "\n" not in message and "Stack trace" not in message, message
    return message


def _write(path: Path, content: bytes | str | dict[str, Any]) -> Path:
    if isinstance(content, dict):
        content = json.dumps(content)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _set(doc: dict[str, Any], keys: str, value: Any) -> dict[str, Any]:
    """doc with the value at a dotted path ("a.b.0.c") replaced."""
    *parents, last = keys.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return doc


def _drop(doc: dict[str, Any], keys: str) -> dict[str, Any]:
    *parents, last = keys.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[last]
    return doc


TREES = "learner.gradient_booster.model.trees"

# name -> (file content, the message after "<path>: ")
BROKEN_FILES: dict[str, tuple[Callable[[], bytes | str | dict[str, Any]], str]] = {
    "empty": (lambda: b"", "empty file: not an XGBoost model"),
    "whitespace": (lambda: b"\n  \n", "empty file: not an XGBoost model"),
    "truncated JSON": (
        lambda: bytes(_booster().save_raw("json"))[:1000],
        "truncated: the JSON ends at byte 1000 before the model is complete",
    ),
    "truncated UBJSON": (
        lambda: bytes(_booster().save_raw("ubj"))[:300],
        "truncated: the UBJSON ends at byte 300 before the model is complete",
    ),
    "damaged JSON": (
        lambda: b'{"learner": {"x": 1,, }}',
        "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 21",
    ),
    "not UTF-8": (lambda: b'{"learner": "\xff"}', "not valid JSON: not UTF-8 text at byte 13"),
    "learner is a number": (
        lambda: {"learner": 5},
        "learner: expected an object, found a number (5)",
    ),
    "no learner": (
        lambda: {"trees": [], "version": [3, 2, 0]},
        "not an XGBoost model: no 'learner' key (keys: 'trees', 'version')",
    ),
    "something else": (
        lambda: b'"model"',
        "not an XGBoost model: neither JSON, UBJSON nor the legacy binary format (it starts "
        "with b'\"model\"')",
    ),
    "a JSON list": (
        lambda: b"[1, 2]",
        "a JSON list, not an XGBoost model (a JSON object with a 'learner' key)",
    ),
    "get_dump JSON": (
        lambda: "[" + ",".join(_booster().get_dump(dump_format="json")) + "]",
        "a tree dump (Booster.get_dump or dump_model output), which XGBoost cannot load back; "
        "save the model itself with booster.save_model('model.json')",
    ),
    "get_dump text": (
        lambda: "".join(f"booster[{i}]:\n{t}" for i, t in enumerate(_booster().get_dump())),
        "a tree dump (Booster.get_dump or dump_model output), which XGBoost cannot load back; "
        "save the model itself with booster.save_model('model.json')",
    ),
    "save_config": (
        lambda: _booster().save_config(),
        "a training configuration (Booster.save_config output), not a model; save the model "
        "with booster.save_model('model.json')",
    ),
    "pickle": (
        lambda: pickle.dumps({"booster": "not really"}),
        "a Python pickle, not an XGBoost model file; load it where it was made and save the "
        "model with .save_model('model.json') (XGBRegressor, XGBClassifier and Booster have it)",
    ),
    "trees missing": (
        lambda: _drop(_doc(), TREES),
        "learner.gradient_booster.model.trees: missing",
    ),
    "trees not a list": (
        lambda: _set(_doc(), TREES, {"0": 1}),
        "learner.gradient_booster.model.trees: expected a list, found an object",
    ),
    "num_feature not a number": (
        lambda: _set(_doc(), "learner.learner_model_param.num_feature", "three"),
        "learner.learner_model_param.num_feature: expected a number, found a string ('three')",
    ),
    "array of the wrong length": (
        lambda: _set(_doc(), f"{TREES}.1.split_conditions", [0.5] * 6),
        "learner.gradient_booster.model.trees[1].split_conditions: 6 values for 7 nodes",
    ),
    "child outside the tree": (
        lambda: _set(_doc(), f"{TREES}.0.left_children.0", 99),
        "tree 0: node 0 has child 99, outside its 7 nodes",
    ),
    "split on a feature the model lacks": (
        lambda: _set(_doc(), f"{TREES}.1.split_indices.0", 7),
        "tree 1: node 0 splits on feature 7, but the model has 3 features",
    ),
    "feature names of the wrong length": (
        lambda: _set(_doc(), "learner.feature_names", ["a", "b"]),
        "learner.feature_names: 2 entries for 3 features",
    ),
    "XGBoost's own check": (
        lambda: _set(_doc(), f"{TREES}.1.base_weights", [1.0]),
        "XGBoost 3.2.0 cannot load it: Check failed: base_weights.size() == n_nodes (1 vs. 7)",
    ),
    "not a number where XGBoost needs one": (
        lambda: _set(_doc(), f"{TREES}.1.split_conditions.0", "abc"),
        "XGBoost 3.2.0 cannot load it: Invalid cast, from String to Number",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
def test_a_broken_file_is_one_line_naming_it(name: str, tmp_path: Path) -> None:
    make, message = BROKEN_FILES[name]
    if message.startswith("XGBoost 3.2.0") and xgb.__version__ != "3.2.0":
        pytest.skip("XGBoost's own words differ between versions")
    path = _write(tmp_path / "model.json", make())
    assert _refusal(path) == f"{path}: {message}"


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    assert _refusal(tmp_path / "nowhere.json") == (
        f"{tmp_path / 'nowhere.json'}: cannot read: No such file or directory"
    )
    assert _refusal(tmp_path) == f"{tmp_path}: cannot read: Is a directory"


def test_a_legacy_binary_model_says_how_to_resave_it() -> None:
    path = FIXTURES / "reg-xgb1.5.2.model"
    assert _refusal(path) == (
        f"{path}: XGBoost's legacy binary format (objective reg:squarederror), which XGBoost "
        "3.1 and later cannot read; re-save it as JSON with XGBoost 3.0 or older: pip install "
        "'xgboost<3.1' && python -c \"import xgboost; "
        "xgboost.Booster(model_file='reg-xgb1.5.2.model').save_model('reg-xgb1.5.2.json')\""
    )


@pytest.mark.parametrize(
    "name",
    [
        "categorical-xgb1.7.6.json",
        "categorical-xgb2.1.4.json",
        "categorical-xgb3.2.0.json",
        "categorical-encoder-xgb3.2.0.json",  # XGBoost 3.1+ with the categories (its encoder)
    ],
)
def test_categorical_models_name_the_feature_whatever_the_xgboost_version(name: str) -> None:
    assert _refusal(FIXTURES / name) == f"{FIXTURES / name}: {CATEGORICAL}"


def test_a_declared_categorical_feature_is_named_even_unsplit(tmp_path: Path) -> None:
    doc = _set(_doc(), "learner.feature_types", ["q", "q", "c"])
    path = _write(tmp_path / "m.json", doc)
    assert _refusal(path) == (
        f"{path}: feature 2 is categorical; edgeboost compiles numerical splits only: one-hot "
        "encode it and retrain"
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"objective": "rank:pairwise"},
            "objective 'rank:pairwise' is not supported; supported: binary:logistic, "
            "binary:logitraw, count:poisson, multi:softmax, multi:softprob, reg:absoluteerror, "
            "reg:gamma, "
            "reg:linear, reg:logistic, reg:pseudohubererror, reg:squarederror, "
            "reg:squaredlogerror, reg:tweedie",
        ),
        (
            {"booster": "gblinear"},
            "booster 'gblinear' is not supported; edgeboost compiles gbtree boosters only "
            "(train with booster='gbtree')",
        ),
        (
            {"booster": "dart"},
            "booster 'dart' is not supported; edgeboost compiles gbtree boosters only "
            "(train with booster='gbtree')",
        ),
        (
            {"multi_strategy": "multi_output_tree", "tree_method": "hist"},
            "tree 0 has vector leaves (multi_strategy='multi_output_tree'); edgeboost compiles "
            "one output per tree: train with multi_strategy='one_output_per_tree'",
        ),
    ],
)
def test_unsupported_objectives_and_boosters_are_one_line(
    params: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "m.json"
    if "multi_strategy" in params:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 3)).astype(np.float32)
        data = xgb.DMatrix(x, label=np.stack([x[:, 0], x[:, 1]], axis=1))
        xgb.train({"nthread": 1, **params}, data, 2).save_model(path)
    else:
        _booster(params).save_model(path)
    assert _refusal(path) == f"{path}: {message}"


def test_the_cli_prints_one_line_and_the_traceback_only_with_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "model.json", {"learner": 5})
    assert main(["compile", str(path), "-o", str(tmp_path / "b")]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"edgeboost compile: error: {path}: learner: expected an object, found a number (5)\n"
    )
    assert main(["compile", str(path), "-o", str(tmp_path / "b"), "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "ModelFileError" in err
    assert err.endswith(f"error: {path}: learner: expected an object, found a number (5)\n")
    assert not (tmp_path / "b").exists()


def test_an_unexpected_error_is_one_line_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgeboost.compile

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("feature_names")

    monkeypatch.setattr(edgeboost.compile, "compile_bundle", broken)
    args = ["compile", str(tmp_path / "m.json"), "-o", str(tmp_path / "b")]
    assert main(args) == 1
    assert capsys.readouterr().err == (
        "edgeboost compile: error: KeyError: 'feature_names' (unexpected; run again with "
        "--debug for the traceback)\n"
    )
    with pytest.raises(KeyError):
        main([*args, "--debug"])


def test_a_model_from_before_xgboost_1_6_compiles_with_one_note(tmp_path: Path) -> None:
    """XGBoost warns twice (each load) with a stray source line; compile says it once."""
    path = FIXTURES / "reg-xgb1.5.2.json"
    result = subprocess.run(
        [sys.executable, "-m", "edgeboost", "compile", str(path), "-o", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    note = (
        f"note: {path} was saved by XGBoost 1.5.2; this XGBoost still reads it but will stop "
        'reading JSON from before 1.6: re-save it with python -c "import xgboost; '
        "xgboost.Booster(model_file='reg-xgb1.5.2.json').save_model('reg-xgb1.5.2.json')\""
    )
    lines = result.stderr.splitlines()
    assert lines[0] == note and lines.count(note) == 1, result.stderr
    assert "WARNING" not in result.stderr and "load_model" not in result.stderr, result.stderr
    assert lines[1] == "loaded reg-xgb1.5.2.json: 3 trees, 3 features, objective reg:squarederror"

"""The runtime: loading and verifying bundles, every accepted input form, and bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import threading
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgeboost.runtime import (
    FeatureNameError,
    InputError,
    IntegrityError,
    ManifestError,
    MetadataMismatchError,
    Model,
    NoLibraryForPlatformError,
)
from edgeboost.runtime.integrity import format_checksums, sha256_file

from .conftest import NAMES
from .zoo import train


@pytest.fixture()
def model(named_bundle: tuple[Path, object]) -> Model:
    return Model.load(named_bundle[0])


def _reference(named_bundle: tuple[Path, object], rows: np.ndarray) -> list[float]:
    booster = named_bundle[1]
    out = booster.inplace_predict(rows.astype(np.float32), missing=np.nan)  # type: ignore[attr-defined]
    return [float(v) for v in out]


ROWS = [[0.5, -1.0, 2.0, 0.25], [1.5, None, -0.5, 3.0], [float("nan"), 0.1, 0.2, float("inf")]]
ROWS_NP = np.array([[math.nan if v is None else v for v in r] for r in ROWS], dtype=np.float32)


def test_every_input_form_gives_the_same_predictions(
    model: Model, named_bundle: tuple[Path, object]
) -> None:
    expected = _reference(named_bundle, ROWS_NP)
    as_dicts = [dict(zip(NAMES, r, strict=True)) for r in ROWS]
    shuffled = [dict(reversed(list(d.items()))) for d in as_dicts]  # order of keys is irrelevant
    flat = array("f", ROWS_NP.reshape(-1).tolist())
    forms = {
        "numpy float32": model.predict(ROWS_NP).tolist(),
        "numpy float64": model.predict(ROWS_NP.astype(np.float64)).tolist(),
        "numpy fortran": model.predict(np.asfortranarray(ROWS_NP)).tolist(),
        "list of lists": model.predict(ROWS),
        "list of tuples": model.predict([tuple(r) for r in ROWS]),
        "list of dicts": model.predict(as_dicts),
        "shuffled dicts": model.predict(shuffled),
        "array.array f": model.predict(flat),
        "array.array d": model.predict(array("d", flat)),
        "memoryview": model.predict(memoryview(flat)),
        "memoryview 2-D": model.predict(memoryview(ROWS_NP)),
    }
    for form, predictions in forms.items():
        assert predictions == expected, form


def test_numpy_float32_input_is_not_copied(model: Model) -> None:
    from edgeboost.runtime.inputs import to_batch

    data, n_rows, from_numpy = to_batch(ROWS_NP, 4, NAMES)
    assert data is ROWS_NP and n_rows == 3 and from_numpy
    flat = array("f", [0.0] * 8)
    assert to_batch(flat, 4, NAMES)[0] is flat


def test_margin_and_output_types(model: Model) -> None:
    assert isinstance(model.predict(ROWS), list)
    assert isinstance(model.predict(ROWS)[0], float)
    out = model.predict(ROWS_NP, margin=True)
    assert out.dtype == np.float32 and out.shape == (3,)
    # identity objective: margin == value
    assert out.tolist() == model.predict(ROWS)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1.0, 2.0, 3.0]], "row 0 has 3 values; the model has 4 features"),
        ([[1.0, 2.0, 3.0, 4.0, 5.0]], "row 0 has 5 values"),
        ([[1.0, "2.0", 3.0, 4.0]], "expected a number or null, got str"),
        ([[1.0, True, 3.0, 4.0]], "got bool"),
        ([[1.0, [2.0], 3.0, 4.0]], "got list"),
        ([[1.0, {"x": 1}, 3.0, 4.0]], "got dict"),
        ([[1.0, 10**400, 3.0, 4.0]], "out of float range"),
        ("1,2,3,4", "must be a sequence of rows"),
        (b"\x00\x01", "must be a sequence of rows"),
        (42, "must be a sequence of rows"),
        (None, "must be a sequence of rows"),
        ([1.0, 2.0, 3.0, 4.0], "row 0 is a float"),
        ([[[1.0, 2.0, 3.0, 4.0]]], "row 0 has 1 values"),
        ([["a", "b", "c", "d"]], "got str"),
        (np.zeros(4, dtype=np.float32), "must be 2-D"),
        (np.zeros((2, 3), dtype=np.float32), "3 columns; the model has 4"),
        (np.zeros((0, 3), dtype=np.float32), "3 columns; the model has 4"),
        (np.array([["a"] * 4]), "must be numeric"),
        (np.zeros((1, 4), dtype=bool), "must be numeric"),
        (np.zeros((1, 4), dtype=object), "must be numeric"),
        (array("f", [1.0, 2.0, 3.0]), "n_rows * 4 values; it holds 3"),
        (array("u", "abcd"), "is text"),
        (memoryview(b"abcd"), "must hold floats"),
        # one-row calls try a fast path first; what it cannot take still gets these errors
        ([(1.0, True, 3.0, 4.0)], "row 0, feature 1: expected a number or null, got bool"),
        ([(1.0, 2.0, 3.0, 10**400)], "row 0, feature 3: 1000000000"),
        ([{"temp": 1.0, "humidity": False, "pressure": 3.0, "wind speed": 4.0}], "got bool"),
        ([{"temp": 1.0, "humidity": 2.0, "pressure": 10**400, "wind speed": 4.0}], "float range"),
        ([{"temp": 1.0, "humidity": 2.0, "pressure": "3", "wind speed": 4.0}], "got str"),
        ([[1.0, 2.0, 3.0, np.float32(4.0).item(), 5.0]], "row 0 has 5 values"),
        (array("f", [1.0, 2.0, 3.0, 4.0, 5.0]), "n_rows * 4 values; it holds 5"),
    ],
)
def test_bad_input_is_a_clear_error(model: Model, rows: object, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        model.predict(rows)


def test_zero_rows_give_an_empty_result_of_the_batch_shape(
    model: Model, compile_once: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """XGBoost answers zero rows with an empty array, not an error; so does predict."""
    empty = np.zeros((0, 4), dtype=np.float32)
    for margin in (False, True):
        for rows in (empty, empty.astype(np.float64), np.asfortranarray(empty)):
            out = model.predict(rows, margin=margin)
            assert (out.shape, out.dtype) == ((0,), np.float32)
        for rows in ([], (), array("f"), array("d"), memoryview(array("f"))):
            assert model.predict(rows, margin=margin) == []
    # Multi-output: (0, k), the shape a batch of k outputs has (XGBoost flattens it to (0,)).
    softprob = train("multi_softprob", tmp_path_factory.mktemp("zero-rows"), rounds=3)
    multi = Model.load(compile_once(softprob, "zero-rows-softprob"))
    for margin in (False, True):
        assert multi.predict(np.zeros((0, 6), dtype=np.float32), margin=margin).shape == (0, 4)
        assert multi.predict([], margin=margin) == []


def test_one_row_gives_what_the_batch_gives_in_every_form(model: Model) -> None:
    """Single rows take fast paths in predict(); they must agree with the general path."""
    rows = [*ROWS, [1, 2, -3, 0], [0.5, 2, None, 1e39], [-0.0, 10**20, 3, 0.1]]
    for margin in (False, True):
        batch = model.predict(rows, margin=margin)
        for i, row in enumerate(rows):
            flat = array("f", [math.nan if v is None else v for v in row])  # 1e39 -> inf
            as_numpy = np.frombuffer(flat, dtype=np.float32).reshape(1, 4).copy()
            named = dict(zip(NAMES, row, strict=True))
            forms = {
                "list": model.predict([row], margin=margin),
                "tuple": model.predict([tuple(row)], margin=margin),
                "dict": model.predict([named], margin=margin),
                "shuffled dict": model.predict([dict(reversed(named.items()))], margin=margin),
                "array.array f": model.predict(flat, margin=margin),
                "numpy": model.predict(as_numpy, margin=margin).tolist(),
                "numpy, read-only": model.predict(_read_only(as_numpy), margin=margin).tolist(),
            }
            for form, predictions in forms.items():
                assert predictions == [batch[i]], (i, form, margin)
                assert type(predictions[0]) is float, form
    out = model.predict(ROWS_NP[:1])
    assert type(out) is np.ndarray and out.dtype == np.float32 and out.shape == (1,)
    assert out.flags.writeable and out.flags.owndata


def _read_only(rows: np.ndarray) -> np.ndarray:
    rows = rows.copy()
    rows.flags.writeable = False
    return rows


@pytest.fixture(scope="module")
def multiclass(
    tmp_path_factory: pytest.TempPathFactory, compile_once: Callable[..., Path]
) -> Model:
    model = train("multi_softprob", tmp_path_factory.mktemp("multiclass"), rounds=4)
    return Model.load(compile_once(model, "multiclass"))


def test_several_outputs_per_row_in_every_form(multiclass: Model) -> None:
    rows = np.random.default_rng(4).normal(size=(5, 6)).astype(np.float32)
    rows[1, 2] = np.nan
    batch = multiclass.predict(rows)
    assert batch.shape == (5, 4) and batch.dtype == np.float32
    expected = batch.tolist()
    assert multiclass.predict(rows.tolist()) == expected
    assert multiclass.predict(array("f", rows.reshape(-1).tolist())) == expected
    for i, row in enumerate(rows.tolist()):
        assert multiclass.predict([row]) == [expected[i]]
        assert multiclass.predict(array("f", row)) == [expected[i]]
        one = multiclass.predict(rows[i : i + 1])
        assert one.shape == (1, 4) and one.tolist() == [expected[i]]
    assert all(type(v) is float for v in multiclass.predict([rows[0].tolist()])[0])


def test_lists_need_no_numpy(named_bundle: tuple[Path, object]) -> None:
    script = (
        "import array, json, sys\n"
        "sys.modules['numpy'] = None  # `import numpy` now raises ImportError\n"
        "from edgeboost.runtime import Model\n"
        "model = Model.load(sys.argv[1])\n"
        "row = [0.5, None, 2, 0.25]\n"
        "named = dict(zip(['temp', 'humidity', 'pressure', 'wind speed'], row))\n"
        "flat = array.array('f', [0.5, float('nan'), 2, 0.25])\n"
        "print(json.dumps([model.predict([row]), model.predict([named]), model.predict(flat),"
        " model.predict([row, row])]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(named_bundle[0])], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    one, by_name, flat, two = json.loads(result.stdout)
    assert one == by_name == flat and two == one * 2
    assert one == Model.load(named_bundle[0]).predict([[0.5, None, 2, 0.25]])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"temp": 1, "humidity": 2, "pressure": 3}, "missing \\['wind speed'\\]"),
        (
            {"temp": 1, "humidity": 2, "pressure": 3, "wind speed": 4, "rain": 0},
            "unknown \\['rain'\\]",
        ),
        (
            {"Temp": 1, "humidity": 2, "pressure": 3, "wind speed": 4},
            "missing \\['temp'\\]; unknown \\['Temp'\\]",
        ),
        ({}, "missing \\['temp', 'humidity'"),
    ],
)
def test_named_features_are_matched_by_name_only(model: Model, row: dict, message: str) -> None:
    with pytest.raises(FeatureNameError, match=message):
        model.predict([row])


def test_null_is_missing_but_nan_text_is_not_a_number(model: Model) -> None:
    with_none = model.predict([[None, 0.0, 0.0, 0.0]])
    with_nan = model.predict([[math.nan, 0.0, 0.0, 0.0]])
    assert with_none == with_nan
    with pytest.raises(InputError, match="got str"):
        model.predict([["NaN", 0.0, 0.0, 0.0]])


def test_concurrent_predictions_from_threads(model: Model) -> None:
    rows = np.random.default_rng(5).normal(size=(2000, 4)).astype(np.float32)
    expected = model.predict(rows)
    results: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                results.append(bool(np.array_equal(model.predict(rows), expected)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 160 and all(results)


def test_concurrent_single_row_predictions_from_threads(model: Model) -> None:
    rows = np.random.default_rng(6).normal(size=(300, 4)).astype(np.float32)
    expected = model.predict(rows).tolist()
    lists = rows.tolist()
    forms: dict[str, Callable[[int], list[float]]] = {
        "list": lambda i: model.predict([lists[i]]),
        "dict": lambda i: model.predict([dict(zip(NAMES, lists[i], strict=True))]),
        "array": lambda i: model.predict(array("f", lists[i])),
        "numpy": lambda i: model.predict(rows[i : i + 1]).tolist(),
    }
    mismatches: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def work(form: str) -> None:
        try:
            for _ in range(5):
                for i in range(len(lists)):
                    if forms[form](i) != [expected[i]]:
                        mismatches.append((form, i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(form,)) for form in forms for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not mismatches


# --- bundle verification --------------------------------------------------------------------


@pytest.fixture()
def bundle_copy(named_bundle: tuple[Path, object], tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(named_bundle[0], copy)
    return copy


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _library(bundle: Path) -> Path:
    return next((bundle / "lib").glob("*/libmodel.so"))


@pytest.mark.parametrize("offset", [0, 1000, -1])
def test_a_library_changed_by_one_byte_is_refused(bundle_copy: Path, offset: int) -> None:
    library = _library(bundle_copy)
    _flip_byte(library, offset)
    with pytest.raises(
        IntegrityError, match=r"libmodel.so: sha256 is .* but manifest.json records"
    ):
        Model.load(bundle_copy)


@pytest.mark.parametrize("offset", [0, 100, -2])
def test_a_manifest_changed_by_one_byte_is_refused(bundle_copy: Path, offset: int) -> None:
    _flip_byte(bundle_copy / "manifest.json", offset)
    with pytest.raises(IntegrityError, match=r"manifest.json: sha256 is .* but SHA256SUMS records"):
        Model.load(bundle_copy)


def _rewrite_manifest(bundle: Path, change: Callable[[dict], None]) -> None:
    """Edit the manifest and re-seal it, as a careless tool (not corruption) would."""
    doc = json.loads((bundle / "manifest.json").read_text())
    change(doc)
    (bundle / "manifest.json").write_text(json.dumps(doc))
    digests = {"manifest.json": sha256_file(bundle / "manifest.json")}
    digests.update({t["file"]: t["sha256"] for t in doc["targets"].values()})
    (bundle / "SHA256SUMS").write_text(format_checksums(digests))


def test_a_resealed_manifest_that_lies_about_the_model_is_refused(bundle_copy: Path) -> None:
    def lie(doc: dict) -> None:
        doc["num_feature"] = 5
        doc["feature_names"].append("extra")
        if doc["feature_types"]:
            doc["feature_types"].append("float")
        doc["model"]["sha256"] = "0" * 64

    _rewrite_manifest(bundle_copy, lie)
    with pytest.raises(MetadataMismatchError) as caught:
        Model.load(bundle_copy)
    message = str(caught.value)
    assert "num_feature: manifest says 5, library says 4" in message
    assert "model sha256: manifest says '000" in message


def test_a_library_from_another_model_is_refused(
    bundle_copy: Path, tmp_path: Path, compile_once: Callable[..., Path]
) -> None:
    import xgboost as xgb

    x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    other = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=x[:, 0], feature_names=NAMES), 3)
    other.save_model(tmp_path / "other.json")
    other_library = _library(compile_once(tmp_path / "other.json", "other"))
    shutil.copyfile(other_library, _library(bundle_copy))

    def adopt(doc: dict) -> None:
        for target in doc["targets"].values():
            target["sha256"] = sha256_file(other_library)

    _rewrite_manifest(bundle_copy, adopt)
    with pytest.raises(MetadataMismatchError, match="model sha256: manifest says"):
        Model.load(bundle_copy)


def test_missing_pieces_are_named(bundle_copy: Path) -> None:
    (bundle_copy / "SHA256SUMS").unlink()
    with pytest.raises(ManifestError, match="SHA256SUMS: missing"):
        Model.load(bundle_copy)
    with pytest.raises(ManifestError, match="no manifest"):
        Model.load(bundle_copy / "lib")


def test_no_library_for_the_platform(bundle_copy: Path) -> None:
    with pytest.raises(NoLibraryForPlatformError, match="no library for target aarch64-linux-gnu"):
        Model.load(bundle_copy, target="aarch64-linux-gnu")


def test_malformed_manifest_fields_are_named(bundle_copy: Path) -> None:
    _rewrite_manifest(bundle_copy, lambda doc: doc.update(num_feature="4"))
    with pytest.raises(ManifestError, match=r"num_feature: expected an integer, found str"):
        Model.load(bundle_copy)
    _rewrite_manifest(bundle_copy, lambda doc: doc.update(num_feature=True))
    with pytest.raises(ManifestError, match="num_feature: expected an integer, found True"):
        Model.load(bundle_copy)
    _rewrite_manifest(bundle_copy, lambda doc: doc.pop("objective"))
    with pytest.raises(ManifestError, match="objective: missing"):
        Model.load(bundle_copy)

"""The kernel backend: the forest as tables (compile/kernel_backend.py) walked by one
branch-free kernel (native/forest_kernel.c), bit-exact with XGBoost on every target.

- the tables: layout, refusals, exact float literals;
- the host library through the real runtime: Hypothesis rows (NaN, +-inf, values exactly on
  and beside thresholds), single rows vs batches, threads, error codes;
- every target through native/parity_driver.c (aarch64 and armv7 under qemu) on >= 1,000,000
  rows in all: every supported objective, the wine models, and models whose margins reach the
  sigmoid's clamp and the softmax's underflow;
- AddressSanitizer + UBSan and valgrind memcheck on the kernel.

Cross compilers, qemu and valgrind skip locally when missing and fail in CI (conftest.need).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeboost.compile import UnsupportedModelError, compile_bundle, load_source_model
from edgeboost.compile.bundle import COMMON_SOURCE
from edgeboost.compile.emulation import (
    EmulationError,
    MissingToolError,
    build_driver,
    prepare_python_root,
    qemu_prefix,
    read_outputs,
    run_library,
    run_python,
    write_rows,
)
from edgeboost.compile.errors import ToolchainError
from edgeboost.compile.kernel_backend import (
    KERNEL_OPTIMIZATION,
    LANES,
    MAX_DEPTH,
    PAD_KEY,
    c_float,
    export_tables,
    heap_layout,
    order_keys,
    read_tree,
    tree_depth,
    write_kernel_sources,
)
from edgeboost.compile.parity import (
    compare_outputs,
    parity_rows,
    reference_predictions,
    split_thresholds,
)
from edgeboost.compile.source import SourceModel
from edgeboost.compile.toolchain import COMMON_FLAGS, TOOLCHAINS
from edgeboost.runtime import Manifest, Model
from edgeboost.runtime.targets import TARGETS, host_target

from .compiled_case import CompiledCase, with_tool
from .conftest import OLD_MODEL_EXPECTED, REPO, SHIPPED_MODEL, need
from .strategies import HYPOTHESIS_BATCHES, HYPOTHESIS_ROWS_PER_BATCH, probing_rows
from .zoo import OBJECTIVES, train, training_data

CACHE = REPO / "tests" / ".cache" / "emulation"
PROBE = REPO / "tests" / "_probe_cross.py"
NATIVE = Path(str(resources.files("edgeboost.native")))
EMULATED = ("aarch64-linux-gnu", "armv7-linux-gnueabihf")
# Probing rows per model and target, on top of the Hypothesis rows: with 17 models and 3
# Hypothesis models (12,800 rows each), 463,400 rows per target, 1.39 million in all.
TARGET_ROWS = 25_000
HYPOTHESIS_MODELS = ("shipped", "reg_squarederror", "multi_softprob")
# Objectives tests/zoo.py does not train: name -> (params, label kind, label transform).
EXTRA_OBJECTIVES: dict[str, tuple[dict[str, Any], str, Callable[[np.ndarray], np.ndarray]]] = {
    "reg_squaredlogerror": ({"objective": "reg:squaredlogerror"}, "count", lambda y: y),
    "reg_pseudohubererror": ({"objective": "reg:pseudohubererror"}, "continuous", lambda y: y),
    "reg_absoluteerror": ({"objective": "reg:absoluteerror"}, "continuous", lambda y: y),
    "reg_gamma": ({"objective": "reg:gamma"}, "count", lambda y: y + 1),
    "reg_tweedie": ({"objective": "reg:tweedie"}, "count", lambda y: y),
}
# Zoo models with every leaf scaled: margins beyond the sigmoid's clamp (|x| > 88.7) and
# softmax exps that underflow, where XGBoost's formulas differ from the textbook ones.
STRESSED = {
    "binary_logistic_x60": ("binary_logistic", 60.0),
    "multi_softprob_x60": ("multi_softprob", 60.0),
}
MODELS = (
    "shipped",
    "old",
    *sorted(OBJECTIVES),
    *sorted(EXTRA_OBJECTIVES),
    *sorted(STRESSED),
)


# ---------------------------------------------------------------------------------------------
# Models and bundles


def _train_extra(name: str, directory: Path) -> Path:
    import xgboost as xgb

    params, kind, relabel = EXTRA_OBJECTIVES[name]
    x, y = training_data(kind)
    booster = xgb.train(
        {**params, "max_depth": 5, "eta": 0.3, "seed": 1, "nthread": 1},
        xgb.DMatrix(x, label=relabel(y), missing=np.nan),
        num_boost_round=30,
    )
    path = directory / f"{name}.json"
    booster.save_model(path)
    return path


def _scaled_leaves(model: Path, factor: float, path: Path) -> Path:
    """``model`` with every leaf multiplied by ``factor`` (kept float32-exact in the JSON)."""
    doc = json.loads(model.read_text())
    for tree in doc["learner"]["gradient_booster"]["model"]["trees"]:
        tree["split_conditions"] = [
            float(np.float32(value * factor)) if left == -1 else value
            for left, value in zip(tree["left_children"], tree["split_conditions"], strict=True)
        ]
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="session")
def model_path(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Callable[[str], Path]:
    """model_path(name) -> the model file, trained on first use."""
    folder = tmp_path_factory.mktemp("kernel-models")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            if name == "shipped":
                made[name] = SHIPPED_MODEL
            elif name == "old":
                made[name] = request.getfixturevalue("shared_data") / "xgboost_wine_quality.json"
            elif name == "reg_640_trees":  # enough trees for windows of 600
                (folder / name).mkdir()
                made[name] = train("reg_squarederror", folder / name, rounds=640)
            elif name in OBJECTIVES:
                made[name] = train(name, folder)
            elif name in EXTRA_OBJECTIVES:
                made[name] = _train_extra(name, folder)
            else:
                base, factor = STRESSED[name]
                made[name] = _scaled_leaves(get(base), factor, folder / f"{name}.json")
        return made[name]

    return get


@pytest.fixture(scope="session")
def cross_ready() -> bool:
    """True when every target's compiler and libc are here (the drivers build)."""
    try:
        for triple in TARGETS:
            build_driver(triple, CACHE)
    except MissingToolError:
        return False
    return True


@pytest.fixture(scope="session")
def case(
    model_path: Callable[[str], Path], cross_ready: bool, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], CompiledCase]:
    """case(name) -> the model compiled with the kernel backend (every target when possible)."""
    folder = tmp_path_factory.mktemp("kernel-bundles")
    made: dict[str, CompiledCase] = {}

    def get(name: str) -> CompiledCase:
        if name not in made:
            path = model_path(name)
            targets = ("all",) if cross_ready else ("host",)
            bundle = folder / name
            compile_bundle(path, bundle, targets=targets, backend="kernel", progress=lambda _: None)
            made[name] = CompiledCase(name, load_source_model(path), bundle, TARGET_ROWS, seed=17)
        return made[name]

    return get


def _report(ours: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> Any:
    return compare_outputs(
        {"margin": ours[0], "value": ours[1]},
        {"margin": reference[0], "value": reference[1]},
        label="xgboost",
    )


def _predict(model: Model, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return model.predict(rows, margin=True), model.predict(rows)


# ---------------------------------------------------------------------------------------------
# Tables


class FakeTree:
    """A Treelite tree accessor over plain arrays (node 0 is the root)."""

    def __init__(self, **fields: Any) -> None:
        n = len(fields["cleft"])
        defaults = {
            "threshold": np.zeros(n, np.float32),
            "leaf_value": np.zeros(n, np.float32),
            "split_index": np.zeros(n, np.int32),
            "default_left": np.zeros(n, np.uint8),
            "cmp": np.full(n, 2, np.int8),
            "node_type": np.where(np.asarray(fields["cleft"]) == -1, 0, 1).astype(np.int8),
        }
        self.fields = {**defaults, **{k: np.asarray(v) for k, v in fields.items()}}

    def get_field(self, name: str) -> np.ndarray:
        return self.fields[name]


def _small_tree(**overrides: Any) -> FakeTree:
    """Root 0 splits into 2 (leaf) and 1; node 1 splits into leaves 3 and 4 (ids not in BFS)."""
    fields: dict[str, Any] = {
        "cleft": [2, 3, -1, -1, -1],
        "cright": [1, 4, -1, -1, -1],
        "split_index": [4, 1, 0, 0, 0],
        "default_left": [1, 0, 0, 0, 0],
        "threshold": np.array([0.5, -2.0, 0, 0, 0], np.float32),
        "leaf_value": np.array([0, 0, 1.5, -0.25, 3.0], np.float32),
    }
    fields.update(overrides)
    return FakeTree(**fields)


def test_tree_becomes_a_complete_heap_with_padding_that_goes_left() -> None:
    tree = read_tree(_small_tree(), 0, num_feature=5)
    assert tree.depth == 2
    key, slot, leaf = heap_layout(tree, 2, pad_slot=10)
    # Heap: 1 = root (feature 4, default left); left child 3 = leaf 2 (1.5), padded;
    # right child 2 = node 1 (feature 1, default right) with leaves 3 (left, heap 5) and 4 (4).
    assert key[1:].tolist() == [*order_keys(np.float32([0.5, -2.0])).tolist(), PAD_KEY]
    assert slot[1:].tolist() == [2 * 4 + 1, 2 * 1 + 0, 10]
    assert leaf.tolist() == [3.0, -0.25, 1.5, 1.5]  # bottom entries for heap 4, 5, 6, 7
    # Deeper than the tree: every leaf fills the bottom entries below it.
    assert heap_layout(tree, 3, pad_slot=10)[2].tolist() == [3.0] * 2 + [-0.25] * 2 + [1.5] * 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"threshold": np.array([np.nan, -2, 0, 0, 0], np.float32)}, "threshold NaN"),
        ({"cmp": np.array([3, 2, 2, 2, 2], np.int8)}, "x < threshold"),
        ({"threshold": np.array([0.5, -2, 0, 0, 0], np.float64)}, "float32"),
        ({"split_index": [9, 1, 0, 0, 0]}, "feature 9"),
    ],
)
def test_what_the_tables_cannot_express_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedModelError, match=message):
        read_tree(_small_tree(**overrides), 0, num_feature=5)


def test_trees_deeper_than_the_kernel_walks_are_refused() -> None:
    depth = MAX_DEPTH + 1  # a chain: node i splits into leaf 2i+2... and node i+1
    cleft = [i + 1 for i in range(depth)] + [-1] * (depth + 1)
    cright = [depth + 1 + i for i in range(depth)] + [-1] * (depth + 1)
    tree = FakeTree(cleft=cleft, cright=cright, split_index=[0] * (2 * depth + 1))
    with pytest.raises(UnsupportedModelError, match=f"{depth} levels deep"):
        read_tree(tree, 0, num_feature=1)


def test_tree_depth_counts_the_splits_on_the_longest_path() -> None:
    assert tree_depth([-1], [-1]) == 0  # a single leaf
    # Root 0 -> (1: leaf, 2 -> (3: leaf, 4 -> (5, 6))): the right branch is 3 splits deep.
    left, right = [1, -1, 3, -1, 5, -1, -1], [2, -1, 4, -1, 6, -1, -1]
    assert tree_depth(left, right) == 3
    assert tree_depth(np.array(left), np.array(right)) == 3


def test_infinite_thresholds_and_leaves_need_no_special_case() -> None:
    for default_left in (0, 1):
        for threshold in (-np.inf, np.inf):
            tree = _small_tree(
                default_left=[default_left, 0, 0, 0, 0],
                threshold=np.array([threshold, -2, 0, 0, 0], np.float32),
                leaf_value=np.array([0, 0, np.inf, -np.inf, np.nan], np.float32),
            )
            assert read_tree(tree, 0, num_feature=5).slot[0] == 8 + default_left


FLOAT32 = st.floats(width=32, allow_nan=False)


@given(FLOAT32, FLOAT32)
@settings(max_examples=2_000, deadline=None)
def test_order_keys_compare_exactly_like_the_floats(a: float, b: float) -> None:
    keys = order_keys(np.float32([a, b]))
    assert bool(keys[0] < keys[1]) == bool(np.float32(a) < np.float32(b))
    # Missing values read 0 (left) or 0xFFFFFFFF (right): beyond every key, padding's included.
    assert 0 < PAD_KEY <= keys.min() and keys.max() < 0xFFFFFFFF


def test_order_keys_of_every_ordered_neighbour() -> None:
    """Every float32 class in one sorted sweep: subnormals, both zeros, infinities."""
    tiny = np.float32(1e-45)
    edges = np.float32([-np.inf, -3.4e38, -1.0, -tiny, -0.0, 0.0, tiny, 1.0, 3.4e38, np.inf])
    keys = order_keys(edges)
    assert (np.diff(keys.astype(np.int64)) > 0).sum() == len(edges) - 2  # only -0.0 == 0.0
    assert keys[4] == keys[5]


def test_float_literals_are_exact() -> None:
    bits = np.random.default_rng(0).integers(0, 2**32, 20_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    for value in values[np.isfinite(values)]:
        literal = c_float(value)
        assert literal.endswith("f")
        parsed = np.float32(float.fromhex(literal[:-1]))
        assert parsed.view(np.uint32) == value.view(np.uint32), (value, literal)
    assert [c_float(np.float32(v)) for v in (np.inf, -np.inf, np.nan)] == [
        "INFINITY",
        "-INFINITY",
        "NAN",
    ]


@pytest.mark.parametrize("window_trees", [3, 256])
def test_tables_walk_every_tree_once_and_add_in_tree_order(window_trees: int) -> None:
    source = load_source_model(SHIPPED_MODEL)
    tables = export_tables(source, window_trees=window_trees)
    assert tables.num_tree == source.num_tree == len(tables.tree_output)
    assert tables.slot_bits == 8
    widths = LANES << tables.group_depth
    # Groups tile the entry tables, each lane a complete tree of its group's depth.
    assert (tables.group_offset == np.concatenate([[0], np.cumsum(widths)[:-1]])).all()
    assert len(tables.key) == len(tables.slot) == len(tables.leaf) == widths.sum()
    end_tree = end_group = 0
    for first_group, stop_group, first_tree, stop_tree in tables.windows:
        # Windows tile the trees in order, and their groups tile the group table.
        assert (first_group, first_tree) == (end_group, end_tree)
        end_group, end_tree = stop_group, stop_tree
        trees = first_tree + tables.group_slot[first_group:stop_group]
        assert set(trees.ravel()) == set(range(first_tree, stop_tree))
        deepest = tables.tree_depth[trees].max(axis=1)
        assert (tables.group_depth[first_group:stop_group] >= np.maximum(deepest, 1)).all()
    assert (end_tree, end_group) == (source.num_tree, len(tables.group_depth))
    assert tables.group_slot.shape[1] == LANES


def test_kernel_cannot_be_asked_for_a_backend_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="unknown backend 'llvm'"):
        compile_bundle(SHIPPED_MODEL, tmp_path / "b", backend="llvm")
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------
# The host library through the runtime


def test_bundle_records_and_library_reports_the_kernel_backend(
    case: Callable[[str], CompiledCase],
) -> None:
    shipped = case("shipped")
    manifest = Manifest.read(shipped.bundle)
    assert manifest.backend == "kernel"
    model = Model.load(shipped.bundle)
    assert model._native.string(model._native.lib.edgeboost_backend()) == "kernel"
    assert manifest.targets[host_target()].parity is not None


@pytest.mark.needs_shared
def test_old_deployed_model_gives_the_recorded_predictions(
    case: Callable[[str], CompiledCase], shared_data: Path
) -> None:
    samples = json.loads((shared_data / "samples.json").read_text())
    assert Model.load(case("old").bundle).predict(samples) == OLD_MODEL_EXPECTED


@pytest.fixture(scope="session")
def hypothesis_rows(case: Callable[[str], CompiledCase]) -> Callable[[str], np.ndarray]:
    """hypothesis_rows(name) -> every row Hypothesis generated while checking the host library
    against XGBoost (fails on the first batch that differs); reused on the other targets."""
    made: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in made:
            made[name] = _run_hypothesis(case(name))
        return made[name]

    return get


def _run_hypothesis(kernel_case: CompiledCase) -> np.ndarray:
    source = kernel_case.source
    model = Model.load(kernel_case.bundle)
    booster = source.booster()
    checked: list[np.ndarray] = []

    @settings(
        max_examples=HYPOTHESIS_BATCHES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(rows=probing_rows(split_thresholds(source), source.num_feature))
    def check(rows: list[tuple[float, ...]]) -> None:
        batch = np.array(rows, dtype=np.float32)
        report = _report(_predict(model, batch), reference_predictions(booster, batch))
        assert report.margin_mismatched_rows == 0, (report, batch)
        assert report.max_ulp_transformed <= 1, (report, batch)
        checked.append(batch)

    check()
    return np.concatenate(checked)


@pytest.mark.parametrize(
    # The everyday loop keeps one model; CI runs every one.
    "name",
    [
        n if n == "reg_squarederror" else pytest.param(n, marks=pytest.mark.slow)
        for n in HYPOTHESIS_MODELS
    ],
)
def test_hypothesis_rows_bit_identical_on_the_host(
    name: str, hypothesis_rows: Callable[[str], np.ndarray]
) -> None:
    assert len(hypothesis_rows(name)) >= HYPOTHESIS_BATCHES * HYPOTHESIS_ROWS_PER_BATCH


@pytest.mark.parametrize("name", ["shipped", "multi_softprob", "binary_logistic_x60"])
def test_single_rows_and_every_batch_size_match_one_big_batch(
    name: str, case: Callable[[str], CompiledCase]
) -> None:
    """Blocks of rows and single rows take different paths through the kernel."""
    kernel_case = case(name)
    model = Model.load(kernel_case.bundle)
    rows = kernel_case.rows[:1_000]
    whole = _predict(model, rows)
    one_by_one = [_predict(model, rows[i : i + 1]) for i in range(200)]
    for i, (margin, value) in enumerate(one_by_one):
        assert margin.tobytes() == whole[0][i : i + 1].tobytes(), i
        assert value.tobytes() == whole[1][i : i + 1].tobytes(), i
    start = 0
    for size in range(1, 41):  # 820 rows in batches of 1..40: every tail length
        part = _predict(model, rows[start : start + size])
        assert part[0].tobytes() == whole[0][start : start + size].tobytes(), size
        start += size
    assert _report(whole, reference_predictions(kernel_case.source.booster(), rows)).exact


def test_concurrent_calls_give_the_same_bits(case: Callable[[str], CompiledCase]) -> None:
    kernel_case = case("multi_softprob")
    model = Model.load(kernel_case.bundle)
    rows = kernel_case.rows[:5_000]
    expected = model.predict(rows).tobytes()
    results: list[bytes] = []

    def work() -> None:
        for _ in range(10):
            results.append(model.predict(rows).tobytes())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80
    assert all(r == expected for r in results)


def test_bad_calls_return_status_codes(case: Callable[[str], CompiledCase]) -> None:
    native = Model.load(case("shipped").bundle)._native
    ffi, lib = native.ffi, native.lib
    rows = ffi.new("float[]", 13 * 2)
    out = ffi.new("float[]", 2)
    assert lib.edgeboost_predict(rows, -1, 13, 1, out) == lib.EDGEBOOST_E_NEGATIVE_ROWS
    assert lib.edgeboost_predict(rows, 2, 12, 1, out) == lib.EDGEBOOST_E_WIDTH_MISMATCH
    assert lib.edgeboost_predict(ffi.NULL, 2, 13, 1, out) == lib.EDGEBOOST_E_NULL_POINTER
    assert lib.edgeboost_predict(rows, 2, 13, 1, ffi.NULL) == lib.EDGEBOOST_E_NULL_POINTER
    assert lib.edgeboost_predict(ffi.NULL, 0, 13, 1, ffi.NULL) == lib.EDGEBOOST_OK
    assert lib.edgeboost_predict(rows, 2, 13, 1, out) == lib.EDGEBOOST_OK
    assert native.string(lib.edgeboost_status_message(99)) == "unknown status code"


# ---------------------------------------------------------------------------------------------
# Every target through the parity driver


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_target_bit_identical_to_xgboost(
    name: str,
    case: Callable[[str], CompiledCase],
    cross_ready: bool,
    hypothesis_rows: Callable[[str], np.ndarray],
    request: pytest.FixtureRequest,
) -> None:
    if name == "old":
        request.getfixturevalue("shared_data")  # skips (or fails in CI) without ../shared
    need(cross_ready, "cross compilers and their C libraries for every target")
    kernel_case = case(name)
    rows = kernel_case.rows
    if name in HYPOTHESIS_MODELS:
        rows = np.concatenate([rows, hypothesis_rows(name)])
    reference = reference_predictions(kernel_case.source.booster(), rows)
    summaries = []
    for triple in TARGETS:
        with_tool(f"qemu for {triple}", lambda triple=triple: qemu_prefix(triple))
        library = kernel_case.library(triple)
        width = kernel_case.source.value_width
        ours = run_library(triple, library, rows, cache_dir=CACHE, value_width=width)
        report = _report(ours, reference)
        summaries.append(
            f"{triple}: {report.margin_mismatched_rows} of {report.rows:,} margins differ, "
            f"values within {report.max_ulp_transformed} ULP"
        )
        assert report.margin_mismatched_rows == 0, summaries
        assert report.max_ulp_transformed <= 1, summaries
    # The stressed models must really reach the extremes they are there for.
    if name == "binary_logistic_x60":
        assert reference[0].min() < -88.7, "no margin beyond the sigmoid's clamp"
    if name == "multi_softprob_x60":
        spread = reference[0].max(axis=1) - reference[0].min(axis=1)
        assert spread.max() > 104, "no softmax exp underflows to 0"


@pytest.mark.needs_shared
def test_old_model_samples_on_every_target(
    case: Callable[[str], CompiledCase], cross_ready: bool, shared_data: Path
) -> None:
    need(cross_ready, "cross compilers and their C libraries for every target")
    kernel_case = case("old")
    samples = json.loads((shared_data / "samples.json").read_text())
    names = kernel_case.source.feature_names
    assert names is not None
    rows = np.array([[sample[n] for n in names] for sample in samples], dtype=np.float32)
    for triple in TARGETS:
        with_tool(f"qemu for {triple}", lambda triple=triple: qemu_prefix(triple))
        _, value = run_library(triple, kernel_case.library(triple), rows, cache_dir=CACHE)
        assert [float(v) for v in value] == OLD_MODEL_EXPECTED, triple


@pytest.mark.needs_shared
@pytest.mark.parametrize("triple", EMULATED)
def test_emulated_python_predicts_the_recorded_samples(
    triple: str,
    case: Callable[[str], CompiledCase],
    cross_ready: bool,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    """The device path: the target's own Python 3.11 + python3-cffi loads the kernel bundle."""
    need(cross_ready, "cross compilers and their C libraries for every target")
    what = f"a bookworm {triple} userland"
    try:
        root = with_tool(what, lambda: prepare_python_root(triple, CACHE))
    except EmulationError as exc:
        need(False, f"{what} [{exc}]")
        raise
    site = tmp_path / "site"
    package = site / "edgeboost"
    package.mkdir(parents=True)
    shutil.copyfile(REPO / "edgeboost" / "__init__.py", package / "__init__.py")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "runtime", package / "runtime", ignore=skip)
    shutil.copytree(REPO / "native", package / "native", ignore=skip)
    samples = str(shared_data / "samples.json")
    bundle = str(case("old").bundle)
    result = run_python(
        triple,
        root,
        [str(PROBE), bundle, "--target", triple, "--samples", samples],
        pythonpath=[site],
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["samples"] == OLD_MODEL_EXPECTED


# ---------------------------------------------------------------------------------------------
# Sanitizers and valgrind


SANITIZE = (
    "-g",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
)
WARNINGS = ("-Wall", "-Wextra", "-Werror")


def _sanitized_library(source: SourceModel, folder: Path, **tables: Any) -> Path:
    """forest_kernel.c + the model's tables as a shared library with ASan and UBSan; also
    proves both compile without a warning under -Wall -Wextra."""
    generated = write_kernel_sources(source, folder / "c", **tables)
    library = folder / "libmodel.so"
    command = [
        "gcc",
        KERNEL_OPTIMIZATION,
        *COMMON_FLAGS,
        *WARNINGS,
        *SANITIZE,
        f"-I{generated.directory}",
        f"-I{NATIVE}",
        str(NATIVE / "forest_kernel.c"),
        str(NATIVE / COMMON_SOURCE),
        *map(str, generated.c_files),
        "-shared",
        "-o",
        str(library),
        "-lm",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return library


@pytest.fixture(scope="session")
def sanitized_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """native/parity_driver.c built with the sanitizers (it dlopens the library under test)."""
    need(shutil.which("gcc") is not None, "gcc")
    folder = tmp_path_factory.mktemp("asan")
    probe = folder / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    runtimes = subprocess.run(
        ["gcc", *SANITIZE, str(probe), "-o", str(folder / "probe")],
        capture_output=True,
        check=False,
    )
    need(runtimes.returncode == 0, "gcc's sanitizer runtimes (libasan, libubsan)")
    driver = folder / "parity_driver"
    command = [
        "gcc",
        "-O1",
        "-std=gnu11",
        *WARNINGS,
        *SANITIZE,
        f"-I{NATIVE}",
        str(NATIVE / "parity_driver.c"),
        "-o",
        str(driver),
        "-ldl",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return driver


@pytest.mark.parametrize("triple", list(TARGETS))
def test_kernel_compiles_without_warnings_for_every_target(
    triple: str, model_path: Callable[[str], Path], tmp_path: Path
) -> None:
    compiler = with_tool(f"a C compiler for {triple}", lambda: _resolve_compiler(triple))
    generated = write_kernel_sources(load_source_model(model_path("multi_softprob")), tmp_path)
    for source in (NATIVE / "forest_kernel.c", NATIVE / COMMON_SOURCE, *generated.c_files):
        command = [
            compiler,
            KERNEL_OPTIMIZATION,
            *COMMON_FLAGS,
            *TOOLCHAINS[triple].flags,
            *WARNINGS,
            f"-I{generated.directory}",
            f"-I{NATIVE}",
            "-c",
            str(source),
            "-o",
            str(tmp_path / f"{source.stem}.o"),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


def _resolve_compiler(triple: str) -> str:
    try:
        return TOOLCHAINS[triple].resolve()
    except ToolchainError as exc:
        raise MissingToolError(str(exc)) from exc


def _run_driver(
    command: list[str], library: Path, rows: np.ndarray, folder: Path, env: dict[str, str]
) -> tuple[tuple[np.ndarray, np.ndarray], subprocess.CompletedProcess[str]]:
    rows_file, out_file = folder / "rows.bin", folder / "out.bin"
    write_rows(rows_file, rows)
    result = subprocess.run(
        [*command, str(library), str(rows_file), str(out_file)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return read_outputs(out_file), result


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "tables"),
    [
        ("shipped", {}),
        # 600-tree windows of 6-feature rows: blocks of 13 rows, so walks of row pairs end
        # with a single row.
        ("reg_640_trees", {"window_trees": 600}),
        ("multi_softprob", {}),
        # Two-byte row slots and windows of 3 trees (partial groups, many windows).
        ("multi_target", {"slot_bits": 16, "window_trees": 3}),
        ("binary_logistic_x60", {"window_trees": 5}),
    ],
)
def test_kernel_is_clean_under_address_and_undefined_behaviour_sanitizers(
    name: str,
    tables: dict[str, Any],
    model_path: Callable[[str], Path],
    sanitized_driver: Path,
    tmp_path: Path,
) -> None:
    source = load_source_model(model_path(name))
    library = _sanitized_library(source, tmp_path, **tables)
    rows = parity_rows(source, 20_003, seed=5)  # not a multiple of the block: single rows too
    env = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    ours, _ = _run_driver([str(sanitized_driver)], library, rows, tmp_path, env)
    report = _report(ours, reference_predictions(source.booster(), rows))
    assert report.margin_mismatched_rows == 0, report
    assert report.max_ulp_transformed <= 1, report


def test_kernel_is_clean_under_valgrind_memcheck(
    case: Callable[[str], CompiledCase], tmp_path: Path
) -> None:
    valgrind = shutil.which("valgrind")
    need(valgrind is not None, "valgrind (apt-get install valgrind)")
    kernel_case = case("multi_softprob")
    host = host_target()
    driver = with_tool("a C toolchain for the host", lambda: build_driver(host, CACHE))
    rows = kernel_case.rows[:3_001]
    command = [
        str(valgrind),
        "--tool=memcheck",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        str(driver),
    ]
    ours, result = _run_driver(command, kernel_case.library(host), rows, tmp_path, {})
    assert "ERROR SUMMARY: 0 errors" in result.stderr, result.stderr[-4000:]
    assert _report(ours, reference_predictions(kernel_case.source.booster(), rows)).exact

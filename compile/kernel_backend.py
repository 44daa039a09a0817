"""C sources for a model through edgeboost's own kernel: the forest as flat tables.

``export_tables`` turns the Treelite model into the arrays ``native/forest_kernel.h``
describes (read that header for the layout and why it is branch-free); ``write_kernel_sources``
writes them as C (``forest_model.c``) with their sizes (``edgeboost_model.h``). The tables are
compiled with ``native/forest_kernel.c`` into the same per-target ``libmodel.so`` as any
backend, behind the same ABI.

Exactness: thresholds become order keys that compare exactly like the float32 values XGBoost
stores (``order_keys``); leaves are those float32 values, written as exact hex literals; each
row starts from ``SourceModel.base_score`` (XGBoost's own float32 base margin); leaves are
added in tree order. Whatever the tables cannot express exactly is refused here, with a
message, rather than compiled into something that might differ from XGBoost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnsupportedModelError
from .source import SourceModel
from .tl2cgen_backend import GeneratedSources, model_header

__all__ = [
    "DEFAULT_WINDOW_TREES",
    "KERNEL_OPTIMIZATION",
    "KERNEL_SOURCE",
    "LANES",
    "MAX_DEPTH",
    "ForestTables",
    "KernelTree",
    "c_float",
    "export_tables",
    "heap_layout",
    "kernel_header",
    "order_keys",
    "read_tree",
    "tables_source",
    "tree_depth",
    "write_kernel_sources",
]

KERNEL_SOURCE = "forest_kernel.c"
# -O3 vectorises the per-row sums of a block (lane-wise IEEE adds, tree order kept: the same
# results): measured on x86_64, wine 1.42 -> 1.25 us per row in batches, 400x6 1.58 -> 1.51.
KERNEL_OPTIMIZATION = "-O3"


def _kernel_limit(name: str) -> int:
    """A ``#define NAME <int>`` of native/forest_kernel.h: the C is where the limits live."""
    header = Path(__file__).resolve().parents[1] / "native" / "forest_kernel.h"
    for line in header.read_text().splitlines():
        parts = line.split()
        if parts[:2] == ["#define", name]:
            return int(parts[2])
    raise RuntimeError(f"{header} defines no {name}")


LANES = _kernel_limit("EB_LANES")
MAX_DEPTH = _kernel_limit("EB_DEPTH_LIMIT")  # the deepest group the kernel has a walk for
# Stack budget of the kernel (see "Limits" in native/forest_kernel.h).
MAX_FEATURES = _kernel_limit("EB_FEATURE_LIMIT")
MAX_OUTPUTS = _kernel_limit("EB_OUTPUT_LIMIT")
MAX_WINDOW_TREES = _kernel_limit("EB_WINDOW_TREES_LIMIT")
DEFAULT_WINDOW_TREES = 256
# Complete trees grow as 2^depth: past this many entries (~150 MB of tables) refuse.
MAX_ENTRIES = 1 << 24
PAD_KEY = 1  # padding "splits": slot EB_PAD_SLOT (0) < 1, always left

_TRANSFORMS = {
    "identity": "EB_TRANSFORM_IDENTITY",
    "sigmoid": "EB_TRANSFORM_SIGMOID",
    "softmax": "EB_TRANSFORM_SOFTMAX",
    "exponential": "EB_TRANSFORM_EXP",
    "max_index": "EB_TRANSFORM_MAX_INDEX",
}
# Treelite's enums: Operator::kLT and TreeNodeType::kNumericalTestNode.
_OP_LESS_THAN = 2
_NUMERICAL_SPLIT = 1
_PER_LINE = 12


def order_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort like the float32 ``values`` (not NaN): ``a < b`` exactly when
    ``key(a) < key(b)``. -0.0 is taken as +0.0 (they compare equal). The kernel's order_key()
    computes the same for each input."""
    floats = np.asarray(values, dtype=np.float32) + np.float32(0.0)  # -0.0 + 0.0 == +0.0
    bits = floats.view(np.uint32)
    negative = (bits & np.uint32(0x80000000)) != 0
    keys: np.ndarray = np.where(negative, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)
    return keys


@dataclass(frozen=True)
class KernelTree:
    """One tree as Treelite holds it (by node id), checked against what the kernel expresses."""

    cleft: np.ndarray  # int: left child id, -1 for a leaf
    cright: np.ndarray
    key: np.ndarray  # uint32: order key of each split's threshold
    slot: np.ndarray  # int: 2 * feature + default_left for each split
    leaf: np.ndarray  # float32: each leaf's value
    depth: int  # splits on the longest root-to-leaf path


@dataclass(frozen=True)
class ForestTables:
    """The arrays of native/forest_kernel.h, for one model."""

    num_feature: int
    num_output: int
    num_class: int
    transform: str
    slot_bits: int
    window_trees: int
    key: np.ndarray  # eb_key, eb_slot, eb_leaf: every group's entries, group after group
    slot: np.ndarray
    leaf: np.ndarray
    tree_depth: np.ndarray
    tree_output: np.ndarray
    group_offset: np.ndarray
    group_depth: np.ndarray
    group_slot: np.ndarray  # (groups, LANES): each lane's tree, relative to its window
    windows: np.ndarray  # (windows, 4): first_group, end_group, first_tree, end_tree

    @property
    def num_tree(self) -> int:
        return len(self.tree_depth)

    @property
    def walk_steps(self) -> int:
        """Lane steps per row (LANES per group level), a measure of the kernel's work."""
        return int(self.group_depth.sum()) * LANES


def export_tables(
    source: SourceModel, *, window_trees: int = DEFAULT_WINDOW_TREES, slot_bits: int | None = None
) -> ForestTables:
    """The kernel's tables for ``source``; ``slot_bits`` forces the row-slot width."""
    _check_limits(source, window_trees)
    window_trees = min(window_trees, source.num_tree)  # the leaf buffer needs no more
    model = source.treelite_model
    trees = [
        read_tree(model.get_tree_accessor(i), i, source.num_feature) for i in range(model.num_tree)
    ]
    group_slot, group_depth, windows = _plan(trees, window_trees)
    widths = LANES << group_depth
    if int(widths.sum()) > MAX_ENTRIES:
        raise UnsupportedModelError(
            f"as complete trees the model needs {int(widths.sum()):,} table entries, more than "
            f"the kernel backend's {MAX_ENTRIES:,} (deep, sparse trees); compile with "
            "--backend tl2cgen"
        )
    pad_slot = 2 * source.num_feature
    lanes = [
        heap_layout(trees[window[2] + lane], int(depth), pad_slot)
        for window in windows
        for slots, depth in zip(
            group_slot[window[0] : window[1]], group_depth[window[0] : window[1]], strict=True
        )
        for lane in slots
    ]
    return ForestTables(
        num_feature=source.num_feature,
        num_output=source.num_output,
        num_class=max(source.num_class),
        transform=source.postprocessor,
        slot_bits=_slot_bits(source.num_feature, slot_bits),
        window_trees=window_trees,
        key=np.concatenate([lane[0] for lane in lanes]),
        slot=np.concatenate([lane[1] for lane in lanes]),
        leaf=np.concatenate([lane[2] for lane in lanes]),
        tree_depth=np.array([t.depth for t in trees], dtype=np.int64),
        tree_output=_tree_outputs(model, max(source.num_class)),
        group_offset=np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64),
        group_depth=group_depth,
        group_slot=group_slot,
        windows=windows,
    )


def _check_limits(source: SourceModel, window_trees: int) -> None:
    hint = "; compile with --backend tl2cgen"
    if source.num_tree == 0:
        raise UnsupportedModelError(f"{source.path.name} has no trees{hint}")
    if source.num_feature > MAX_FEATURES:
        raise UnsupportedModelError(
            f"{source.num_feature} features: the kernel backend takes at most {MAX_FEATURES}{hint}"
        )
    if source.num_output > MAX_OUTPUTS:
        raise UnsupportedModelError(
            f"{source.num_output} outputs: the kernel backend takes at most {MAX_OUTPUTS}{hint}"
        )
    if source.postprocessor not in _TRANSFORMS:
        raise UnsupportedModelError(
            f"transform {source.postprocessor!r} is not in the kernel{hint}"
        )
    if not 1 <= window_trees <= MAX_WINDOW_TREES:
        raise ValueError(f"window_trees must be in [1, {MAX_WINDOW_TREES}], got {window_trees}")


def tree_depth(left: Sequence[int] | np.ndarray, right: Sequence[int] | np.ndarray) -> int:
    """Splits on the longest root-to-leaf path of a tree given by its child ids (-1: leaf)."""
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, depth = stack.pop()
        if left[node] == -1:
            deepest = max(deepest, depth)
        else:
            stack += [(int(left[node]), depth + 1), (int(right[node]), depth + 1)]
    return deepest


def read_tree(tree: Any, index: int, num_feature: int) -> KernelTree:
    """Read one Treelite tree and check every split the kernel will take."""
    fields = _read_fields(tree, index)
    cleft = fields["cleft"].astype(np.int64)
    slot = np.zeros(len(cleft), dtype=np.int64)
    for node in np.flatnonzero(cleft != -1):
        slot[node] = _split_slot(fields, index, int(node), num_feature)
    depth = tree_depth(cleft, fields["cright"])
    if depth > MAX_DEPTH:
        raise UnsupportedModelError(
            f"tree {index} is {depth} levels deep; the kernel backend takes at most {MAX_DEPTH}; "
            "compile with --backend tl2cgen"
        )
    return KernelTree(
        cleft=cleft,
        cright=fields["cright"].astype(np.int64),
        key=order_keys(fields["threshold"]),
        slot=slot,
        leaf=fields["leaf_value"],
        depth=depth,
    )


def heap_layout(
    tree: KernelTree, depth: int, pad_slot: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``tree`` as a complete heap of ``depth`` levels: (key, slot, leaf), 2^depth entries each.

    Heap node i has its left child at 2i + 1 and its right child at 2i (the root is 1, entry 0
    is unused); a leaf above ``depth`` becomes padding that always goes left, its value
    filling the bottom entries below it (see "Complete trees" in native/forest_kernel.h).
    """
    width = 1 << depth
    key = np.full(width, PAD_KEY, dtype=np.uint32)
    slot = np.full(width, pad_slot, dtype=np.int64)
    leaf = np.zeros(width, dtype=np.float32)
    stack = [(0, 1, 0)]  # (Treelite node id, heap index, level)
    while stack:
        node, at, level = stack.pop()
        if tree.cleft[node] == -1:
            below = depth - level
            leaf[(at << below) - width : ((at + 1) << below) - width] = tree.leaf[node]
            continue
        key[at], slot[at] = tree.key[node], tree.slot[node]
        stack += [(int(tree.cleft[node]), 2 * at + 1, level + 1)]
        stack += [(int(tree.cright[node]), 2 * at, level + 1)]
    return key, slot, leaf


def _read_fields(tree: Any, index: int) -> dict[str, np.ndarray]:
    names = ("cleft", "cright", "split_index", "default_left", "cmp", "node_type")
    fields = {name: np.asarray(tree.get_field(name)) for name in names}
    for name in ("threshold", "leaf_value"):
        fields[name] = np.asarray(tree.get_field(name))
        if fields[name].dtype != np.float32:
            raise UnsupportedModelError(
                f"tree {index}: Treelite holds {name} as {fields[name].dtype}, not the float32 "
                "values XGBoost stores; cannot guarantee bit-exact predictions"
            )
    return fields


def _split_slot(fields: dict[str, np.ndarray], tree: int, node: int, num_feature: int) -> int:
    """The expanded-row slot a split reads, once the split is checked."""
    where = f"tree {tree}, node {node}"
    if fields["cmp"][node] != _OP_LESS_THAN or fields["node_type"][node] != _NUMERICAL_SPLIT:
        raise UnsupportedModelError(f"{where}: only numerical `x < threshold` splits are supported")
    feature, default_left = int(fields["split_index"][node]), int(fields["default_left"][node])
    if not 0 <= feature < num_feature:
        raise UnsupportedModelError(
            f"{where}: split on feature {feature}, but the model has {num_feature}"
        )
    if math.isnan(fields["threshold"][node]):
        raise UnsupportedModelError(
            f"{where}: a split at threshold NaN cannot be expressed by the kernel; "
            "compile with --backend tl2cgen"
        )
    return 2 * feature + default_left


def _slot_bits(num_feature: int, forced: int | None) -> int:
    """One-byte row slots while the 2F + 1 of them fit, else two bytes."""
    fits_8 = 2 * num_feature <= 0xFF
    if forced is None:
        return 8 if fits_8 else 16
    if forced not in (8, 16) or (forced == 8 and not fits_8):
        raise ValueError(f"slot_bits={forced} cannot index this model's rows (8 fits: {fits_8})")
    return forced


def _tree_outputs(model: Any, num_class: int) -> np.ndarray:
    header = model.get_header_accessor()
    target = np.asarray(header.get_field("target_id"), dtype=np.int64)
    klass = np.asarray(header.get_field("class_id"), dtype=np.int64)
    if (target < 0).any() or (klass < 0).any():
        raise UnsupportedModelError(
            "trees that add to every output (vector leaves) are not supported"
        )
    return target * num_class + klass


def _plan(
    trees: Sequence[KernelTree], window_trees: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of consecutive trees; in each, groups of LANES trees of similar depth."""
    slots: list[list[int]] = []
    depths: list[int] = []
    windows = []
    for first in range(0, len(trees), window_trees):
        end = min(first + window_trees, len(trees))
        first_group = len(depths)
        by_depth = sorted(range(first, end), key=lambda t: (trees[t].depth, t))
        for start in range(0, len(by_depth), LANES):
            lanes = by_depth[start : start + LANES]
            lanes += [lanes[-1]] * (LANES - len(lanes))  # repeat: same tree, same slot
            slots.append([t - first for t in lanes])
            # A lone leaf is a tree of depth 0: it walks one level of padding.
            depths.append(max(1, *(trees[t].depth for t in lanes)))
        windows.append((first_group, len(depths), first, end))
    return (
        np.array(slots, dtype=np.int64),
        np.array(depths, dtype=np.int64),
        np.array(windows, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------
# C output


def write_kernel_sources(
    source: SourceModel,
    directory: Path,
    *,
    window_trees: int = DEFAULT_WINDOW_TREES,
    slot_bits: int | None = None,
) -> GeneratedSources:
    """Write forest_model.c and edgeboost_model.h for ``source`` into ``directory``."""
    tables = export_tables(source, window_trees=window_trees, slot_bits=slot_bits)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "edgeboost_model.h").write_text(model_header(source) + kernel_header(tables))
    tables_c = directory / "forest_model.c"
    tables_c.write_text(tables_source(tables))
    return GeneratedSources(directory, (tables_c,))


def kernel_header(tables: ForestTables) -> str:
    """The EB_* sizes native/forest_kernel.h needs (appended to tl2cgen_backend.model_header,
    which gives the output count, base scores and model hash)."""
    return "".join(
        f"#define {name} {value}\n"
        for name, value in (
            ("EB_NUM_FEATURE", tables.num_feature),
            ("EB_NUM_CLASS", tables.num_class),
            ("EB_TRANSFORM", _TRANSFORMS[tables.transform]),
            ("EB_SLOT_BITS", tables.slot_bits),
            ("EB_NUM_ENTRY", len(tables.key)),
            ("EB_NUM_TREE", tables.num_tree),
            ("EB_NUM_GROUP", len(tables.group_depth)),
            ("EB_NUM_WINDOW", len(tables.windows)),
            ("EB_WINDOW_TREES", tables.window_trees),
            ("EB_MAX_DEPTH", int(tables.group_depth.max())),
            # Bit d set: some group has depth d. The kernel has walks for these depths only.
            ("EB_DEPTH_MASK", f"{_depth_mask(tables.group_depth):#x}u"),
        )
    )


def _depth_mask(depths: np.ndarray) -> int:
    return sum(1 << int(depth) for depth in np.unique(depths))


def tables_source(tables: ForestTables) -> str:
    """forest_model.c: the tables as C initialisers, floats as exact hex literals."""
    keys = (f"{int(k)}u" for k in tables.key)
    parts = [
        "/* Generated by edgeboost.compile (kernel backend): build output, never committed. */\n",
        '#include <math.h>\n\n#include "forest_kernel.h"\n\n',
        _array("EB_TABLE_ALIGN const uint32_t eb_key[EB_NUM_ENTRY]", keys, _PER_LINE),
        _array(
            "EB_TABLE_ALIGN const eb_slot_t eb_slot[EB_NUM_ENTRY]",
            _integers(tables.slot),
            2 * _PER_LINE,
        ),
        _array(
            "EB_TABLE_ALIGN const float eb_leaf[EB_NUM_ENTRY]",
            map(c_float, tables.leaf),
            _PER_LINE,
        ),
        _array("const struct eb_group eb_groups[EB_NUM_GROUP]", _groups(tables), 1),
        _array("const struct eb_window eb_windows[EB_NUM_WINDOW]", _windows(tables), 2),
    ]
    if tables.num_output > 1:
        outputs = _integers(tables.tree_output)
        parts.append(_array("const uint16_t eb_tree_output[EB_NUM_TREE]", outputs, 16))
    return "".join(parts)


def c_float(value: np.float32) -> str:
    """An exact C float expression for a float32 value (hex literal; math.h for inf/NaN)."""
    number = float(value)
    if math.isnan(number):
        return "NAN"
    if math.isinf(number):
        return "INFINITY" if number > 0 else "-INFINITY"
    mantissa, exponent = number.hex().split("p")
    return f"{mantissa.rstrip('0').rstrip('.')}p{exponent}f"  # 0x1.8000000000000p+1 -> 0x1.8p+1


def _integers(values: np.ndarray) -> Iterable[str]:
    return (str(v) for v in values.tolist())


def _groups(tables: ForestTables) -> Iterable[str]:
    for offset, depth, slot in zip(
        tables.group_offset, tables.group_depth, tables.group_slot, strict=True
    ):
        yield f"{{{offset}, {depth}, {{{_join(slot)}}}}}"


def _windows(tables: ForestTables) -> Iterable[str]:
    for window in tables.windows:
        yield f"{{{_join(window)}}}"


def _join(values: Iterable[Any]) -> str:
    return ", ".join(str(int(v)) for v in values)


def _array(declaration: str, items: Iterable[str], per_line: int) -> str:
    items = list(items)
    lines = [
        "  " + ", ".join(items[i : i + per_line]) + "," for i in range(0, len(items), per_line)
    ]
    return f"{declaration} = {{\n" + "\n".join(lines) + "\n};\n\n"

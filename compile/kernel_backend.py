"""C sources for a model through edgeboost's own kernel: the forest as flat tables.

``export_tables`` turns the Treelite model into the arrays ``native/forest_kernel.h``
describes (read that header for the layout and why it is branch-free); ``write_kernel_sources``
writes them as C (``forest_model.c``) with their sizes (``edgeboost_model.h``). The tables are
compiled with ``native/forest_kernel.c`` into the same per-target ``libmodel.so`` as any
backend, behind the same ABI.

Exactness: thresholds and leaves are the float32 values XGBoost stores, written as exact hex
literals; each row starts from ``SourceModel.base_score`` (XGBoost's own float32 base margin);
leaves are added in tree order. Whatever the tables cannot express exactly is refused here,
with a message, rather than compiled into something that might differ from XGBoost.
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
    "KERNEL_SOURCE",
    "LANES",
    "ForestTables",
    "TreeLayout",
    "c_float",
    "export_tables",
    "kernel_header",
    "layout_tree",
    "tables_source",
    "write_kernel_sources",
]

KERNEL_SOURCE = "forest_kernel.c"
LANES = 8  # EB_LANES in native/forest_kernel.h
# Stack budget of the kernel (see "Limits" in native/forest_kernel.h).
MAX_FEATURES = 4096
MAX_OUTPUTS = 1024
MAX_WINDOW_TREES = 1024
DEFAULT_WINDOW_TREES = 256

_TRANSFORMS = {
    "identity": "EB_TRANSFORM_IDENTITY",
    "sigmoid": "EB_TRANSFORM_SIGMOID",
    "softmax": "EB_TRANSFORM_SOFTMAX",
    "exponential": "EB_TRANSFORM_EXP",
}
# Treelite's enums: Operator::kLT and TreeNodeType::kNumericalTestNode.
_OP_LESS_THAN = 2
_NUMERICAL_SPLIT = 1
_NODES_PER_LINE = 3


@dataclass(frozen=True)
class TreeLayout:
    """One tree breadth first, the two children of a split adjacent."""

    threshold: np.ndarray  # float32: split threshold, or the leaf value
    slot: np.ndarray  # int64: 2 * feature + default_left, or the leaf slot (2 * num_feature)
    left: np.ndarray  # int64: distance to the left child (right is one further); a leaf: 0
    depth: int  # splits on the longest root-to-leaf path


@dataclass(frozen=True)
class ForestTables:
    """The arrays of native/forest_kernel.h, for one model."""

    num_feature: int
    num_output: int
    num_class: int
    transform: str
    index_bits: int
    window_trees: int
    threshold: np.ndarray  # eb_nodes: every tree's nodes, concatenated in tree order
    slot: np.ndarray
    left: np.ndarray
    tree_root: np.ndarray  # index of each tree's root in the node arrays
    tree_depth: np.ndarray
    tree_output: np.ndarray
    group_root: np.ndarray  # (groups, LANES)
    group_slot: np.ndarray  # (groups, LANES)
    group_depth: np.ndarray
    windows: np.ndarray  # (windows, 4): first_group, end_group, first_tree, end_tree

    @property
    def num_tree(self) -> int:
        return len(self.tree_root)

    @property
    def walk_steps(self) -> int:
        """Lane steps per row (LANES per group step), a measure of the kernel's work."""
        return int(self.group_depth.sum()) * LANES


def export_tables(
    source: SourceModel, *, window_trees: int = DEFAULT_WINDOW_TREES, index_bits: int | None = None
) -> ForestTables:
    """The kernel's tables for ``source``; ``index_bits`` forces the node index width."""
    _check_limits(source, window_trees)
    window_trees = min(window_trees, source.num_tree)  # the leaf buffer needs no more
    model = source.treelite_model
    layouts = [
        layout_tree(model.get_tree_accessor(i), i, source.num_feature)
        for i in range(model.num_tree)
    ]
    sizes = np.array([len(t.threshold) for t in layouts], dtype=np.int64)
    tree_root = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    group_root, group_slot, group_depth, windows = _plan(tree_root, layouts, window_trees)
    return ForestTables(
        num_feature=source.num_feature,
        num_output=source.num_output,
        num_class=max(source.num_class),
        transform=source.postprocessor,
        index_bits=_index_bits(int(sizes.max()), source.num_feature, index_bits),
        window_trees=window_trees,
        threshold=np.concatenate([t.threshold for t in layouts]),
        slot=np.concatenate([t.slot for t in layouts]),
        left=np.concatenate([t.left for t in layouts]),
        tree_root=tree_root,
        tree_depth=np.array([t.depth for t in layouts], dtype=np.int64),
        tree_output=_tree_outputs(model, max(source.num_class)),
        group_root=group_root,
        group_slot=group_slot,
        group_depth=group_depth,
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


def layout_tree(tree: Any, index: int, num_feature: int) -> TreeLayout:
    """Lay out one Treelite tree (reachable nodes only) breadth first."""
    fields = _read_fields(tree, index)
    order, depth_of = [0], [0]  # Treelite node ids in layout order, and their depths
    entries: list[tuple[np.float32, int, int]] = []  # (threshold, slot, left) per position
    for position, node in enumerate(order):  # ``order`` grows while we walk it: breadth first
        if fields["cleft"][node] == -1:
            entries.append((_leaf_value(fields, index, node), 2 * num_feature, 0))
            continue
        threshold, slot = _split(fields, index, node, num_feature)
        entries.append((threshold, slot, len(order) - position))
        order.extend((int(fields["cleft"][node]), int(fields["cright"][node])))
        depth_of.extend((depth_of[position] + 1,) * 2)
    threshold, slot, left = zip(*entries, strict=True)
    return TreeLayout(
        threshold=np.array(threshold, dtype=np.float32),
        slot=np.array(slot, dtype=np.int64),
        left=np.array(left, dtype=np.int64),
        depth=max(depth_of),
    )


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


def _leaf_value(fields: dict[str, np.ndarray], tree: int, node: int) -> np.float32:
    value = fields["leaf_value"][node]
    # A leaf stays put because -inf < value (see forest_kernel.h): not for NaN or -inf.
    if math.isnan(value) or value == -math.inf:
        raise UnsupportedModelError(
            f"tree {tree}, node {node}: leaf value {value} is not supported"
        )
    return value


def _split(
    fields: dict[str, np.ndarray], tree: int, node: int, num_feature: int
) -> tuple[np.float32, int]:
    """A split's threshold and the expanded-row slot it reads, once checked."""
    where = f"tree {tree}, node {node}"
    if fields["cmp"][node] != _OP_LESS_THAN or fields["node_type"][node] != _NUMERICAL_SPLIT:
        raise UnsupportedModelError(f"{where}: only numerical `x < threshold` splits are supported")
    feature, default_left = int(fields["split_index"][node]), int(fields["default_left"][node])
    if not 0 <= feature < num_feature:
        raise UnsupportedModelError(
            f"{where}: split on feature {feature}, but the model has {num_feature}"
        )
    threshold = fields["threshold"][node]
    # Missing values read -inf on default-left splits, which only goes left if -inf < threshold.
    if default_left and (math.isnan(threshold) or threshold == -math.inf):
        raise UnsupportedModelError(
            f"{where}: a default-left split at threshold {threshold} cannot be expressed by the "
            "kernel; compile with --backend tl2cgen"
        )
    return threshold, 2 * feature + default_left


def _index_bits(largest_tree: int, num_feature: int, forced: int | None) -> int:
    """16-bit child distances and slots when they fit (8-byte nodes), else 32."""
    fits_16 = max(largest_tree, 2 * num_feature + 1) <= 0xFFFF
    if forced is None:
        return 16 if fits_16 else 32
    if forced not in (16, 32) or (forced == 16 and not fits_16):
        raise ValueError(f"index_bits={forced} cannot index this model (16 fits: {fits_16})")
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
    tree_root: np.ndarray, layouts: Sequence[TreeLayout], window_trees: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows of consecutive trees; in each, groups of LANES trees of similar depth."""
    roots: list[list[int]] = []
    slots: list[list[int]] = []
    depths: list[int] = []
    windows = []
    for first in range(0, len(layouts), window_trees):
        end = min(first + window_trees, len(layouts))
        first_group = len(depths)
        by_depth = sorted(range(first, end), key=lambda t: (layouts[t].depth, t))
        for start in range(0, len(by_depth), LANES):
            lanes = by_depth[start : start + LANES]
            lanes += [lanes[-1]] * (LANES - len(lanes))  # repeat: same tree, same slot
            roots.append([int(tree_root[t]) for t in lanes])
            slots.append([t - first for t in lanes])
            depths.append(max(layouts[t].depth for t in lanes))
        windows.append((first_group, len(depths), first, end))
    return (
        np.array(roots, dtype=np.int64),
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
    index_bits: int | None = None,
) -> GeneratedSources:
    """Write forest_model.c and edgeboost_model.h for ``source`` into ``directory``."""
    tables = export_tables(source, window_trees=window_trees, index_bits=index_bits)
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
            ("EB_INDEX_BITS", tables.index_bits),
            ("EB_NUM_NODE", len(tables.threshold)),
            ("EB_NUM_TREE", tables.num_tree),
            ("EB_NUM_GROUP", len(tables.group_depth)),
            ("EB_NUM_WINDOW", len(tables.windows)),
            ("EB_WINDOW_TREES", tables.window_trees),
        )
    )


def tables_source(tables: ForestTables) -> str:
    """forest_model.c: the tables as C initialisers, floats as exact hex literals."""
    parts = [
        "/* Generated by edgeboost.compile (kernel backend): build output, never committed. */\n",
        '#include <math.h>\n\n#include "forest_kernel.h"\n\n',
        _array("const struct eb_node eb_nodes[EB_NUM_NODE]", _nodes(tables), _NODES_PER_LINE),
        _array("const struct eb_group eb_groups[EB_NUM_GROUP]", _groups(tables), 1),
        _array("const struct eb_window eb_windows[EB_NUM_WINDOW]", _windows(tables), 2),
    ]
    if tables.num_output > 1:
        outputs = (str(int(o)) for o in tables.tree_output)
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


def _nodes(tables: ForestTables) -> Iterable[str]:
    for threshold, slot, left in zip(tables.threshold, tables.slot, tables.left, strict=True):
        yield f"{{{c_float(threshold)}, {slot}, {left}}}"


def _groups(tables: ForestTables) -> Iterable[str]:
    for root, slot, depth in zip(
        tables.group_root, tables.group_slot, tables.group_depth, strict=True
    ):
        yield f"{{{{{_join(root)}}}, {{{_join(slot)}}}, {depth}}}"


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

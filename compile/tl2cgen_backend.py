"""C sources for a model through TL2cgen, made bit-exact with XGBoost.

TL2cgen 1.0.0's generated ``predict`` differs from XGBoost's CPU predictor in two ways that
change float32 results (measured: ~90% of rows differ by up to ~1e-5):
  1. leaf values are double literals (``result[0] += 0.68967915;``), so each addition is done
     in double and rounded, which differs from XGBoost's float32 add on ties;
  2. the base score is added after the trees instead of before them.
We rewrite (1) as exact float32 hex literals and delete (2); ``native/tl2cgen_adapter.c``
then starts every row from the float32 base score. Both edits are checked (every leaf is
accounted for, and the base-score block has exactly one line per output), so a change in
TL2cgen's output format fails the build instead of silently breaking parity.

We do not use TL2cgen's ``quantize`` option: it prints thresholds with too few digits
(inputs on those thresholds take the wrong branch) and writes into the caller's input.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._deps import require
from .errors import UnsupportedModelError
from .native_output import native_output_to
from .source import SourceModel

__all__ = ["GeneratedSources", "generate_tl2cgen_sources", "translation_units"]

_log = logging.getLogger(__name__)

_LEAF_LINE = re.compile(r"^(?P<head>\s*result\[(?P<k>\d+)\] \+= )(?P<value>[-+0-9.eE]+);$", re.M)
_BASE_BLOCK = re.compile(
    r"^  // Apply base_scores\n(?P<lines>(?:  result\[\d+\] \+= [-+0-9.eE]+;\n)+)", re.M
)
# Trees per translation unit: small enough that units compile in seconds and in parallel.
_TREES_PER_UNIT = 64


@dataclass(frozen=True)
class GeneratedSources:
    directory: Path
    c_files: tuple[Path, ...]


def translation_units(num_tree: int, jobs: int | None = None) -> int:
    """How many .c files to split the trees into: enough to keep every core busy."""
    cores = jobs or os.cpu_count() or 1
    return max(1, min(num_tree, max(2 * cores, math.ceil(num_tree / _TREES_PER_UNIT))))


def generate_tl2cgen_sources(
    source: SourceModel, directory: Path, *, units: int | None = None
) -> GeneratedSources:
    tl2cgen = require("tl2cgen")
    units = units or translation_units(source.num_tree)
    with _native_output_to_log():
        # TL2cgen bundles Treelite 4.1.2 and warns that our (newer) Treelite wrote the model;
        # that warning is harmless for XGBoost models, so it goes to the debug log.
        tl2cgen.generate_c_code(
            source.treelite_model, dirpath=str(directory), params={"parallel_comp": units}
        )
    recipe = json.loads((directory / "recipe.json").read_text())
    c_files = tuple(directory / f"{s['name']}.c" for s in recipe["sources"])

    # The base-score block first: its lines look like leaf additions.
    main = directory / "main.c"
    main.write_text(_without_base_scores(main.read_text(), source.num_output))
    leaf_values = _leaf_value_set(source)
    patched_leaves = 0
    for path in c_files:
        text, count = _exact_leaf_literals(path.read_text(), leaf_values, path)
        path.write_text(text)
        patched_leaves += count
    if patched_leaves != source.num_leaf:
        raise UnsupportedModelError(
            f"TL2cgen output has {patched_leaves} leaf additions, the model has "
            f"{source.num_leaf} leaves; the generated code is not what edgeboost expects"
        )
    # TL2cgen's own declarations (union Entry, predict(), N_TARGET) come in through the
    # generated header, so the hand-written adapter names no generated file but this one.
    (directory / "edgeboost_model.h").write_text(model_header(source) + '#include "header.h"\n')
    return GeneratedSources(directory, c_files)


@contextmanager
def _native_output_to_log() -> Iterator[None]:
    """Send what C++ code prints on stdout/stderr to the debug log instead of the terminal."""
    with tempfile.TemporaryFile() as captured:
        try:
            with native_output_to(captured):
                yield
        finally:
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                _log.debug("tl2cgen: %s", line)


def _leaf_value_set(source: SourceModel) -> set[int]:
    """Bit patterns of every float32 leaf value in the model."""
    values: set[int] = set()
    model = source.treelite_model
    for i in range(model.num_tree):
        tree = model.get_tree_accessor(i)
        is_leaf = tree.get_field("cleft") == -1
        leaves = np.asarray(tree.get_field("leaf_value"))[is_leaf].astype(np.float32)
        values.update(int(v) for v in leaves.view(np.uint32))
    return values


def _exact_leaf_literals(text: str, leaf_values: set[int], path: Path) -> tuple[str, int]:
    count = 0

    def exact(match: re.Match[str]) -> str:
        nonlocal count
        value = np.float32(float(match["value"]))
        if int(value.view(np.uint32)) not in leaf_values:
            raise UnsupportedModelError(
                f"{path.name}: leaf literal {match['value']} is not a float32 leaf of the model"
            )
        count += 1
        return f"{match['head']}{float(value).hex()}f;"

    return _LEAF_LINE.sub(exact, text), count


def _without_base_scores(main_c: str, num_output: int) -> str:
    match = _BASE_BLOCK.search(main_c)
    if match is None:
        raise UnsupportedModelError("main.c: TL2cgen's base-score block was not found")
    lines = match["lines"].count("\n")
    if lines != num_output:
        raise UnsupportedModelError(
            f"main.c: base-score block has {lines} lines, expected {num_output}"
        )
    replacement = "  // Base scores: set before the trees by edgeboost (tl2cgen_adapter.c).\n"
    return main_c[: match.start()] + replacement + main_c[match.end() :]


def model_header(source: SourceModel) -> str:
    """edgeboost_model.h: what the adapter needs to know about this model."""
    base = ", ".join(f"{v.hex()}f" for v in source.base_score)
    header = (
        "/* Generated by edgeboost.compile: build output, never committed. */\n"
        f"#define EDGEBOOST_MODEL_NUM_OUTPUT {source.num_output}\n"
        f"#define EDGEBOOST_MODEL_BASE_SCORE {{{base}}}\n"
        f'#define EDGEBOOST_MODEL_SHA256 "{source.sha256}"\n'
    )
    if source.postprocessor == "max_index":  # multi:softmax: see tl2cgen_adapter.c
        header += "#define EDGEBOOST_MODEL_MAX_INDEX 1\n"
    return header

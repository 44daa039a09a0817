"""What the cross-target and kernel parity tests share: a model compiled into a bundle with its
probing rows and XGBoost's answers, and running a step that needs an outside tool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgeboost.compile.emulation import MissingToolError
from edgeboost.compile.parity import parity_rows, reference_predictions
from edgeboost.compile.source import SourceModel
from edgeboost.runtime import Manifest

from .conftest import need

T = TypeVar("T")


@dataclass
class CompiledCase:
    """One model compiled into a bundle, with ``row_count`` probing rows (from ``seed``)."""

    name: str
    source: SourceModel
    bundle: Path
    row_count: int
    seed: int

    def library(self, triple: str) -> Path:
        return self.bundle / Manifest.read(self.bundle).targets[triple].file

    @cached_property
    def rows(self) -> np.ndarray:
        return parity_rows(self.source, self.row_count, seed=self.seed)

    @cached_property
    def reference(self) -> dict[str, np.ndarray]:
        """XGBoost's margins and values for ``rows``."""
        margin, value = reference_predictions(self.source.booster(), self.rows)
        return {"margin": margin, "value": value}


def with_tool(what: str, action: Callable[[], T]) -> T:
    """Run ``action``; a missing tool (MissingToolError) skips locally and fails in CI."""
    try:
        return action()
    except MissingToolError as exc:
        need(False, f"{what} [{exc}]")
        raise  # unreachable: need() skips or fails

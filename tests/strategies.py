"""Hypothesis strategies shared by the parity tests of every backend."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

HYPOTHESIS_BATCHES = 100
HYPOTHESIS_ROWS_PER_BATCH = 128  # 100 x 128 = 12,800 rows per model


def probing_rows(
    thresholds: dict[int, np.ndarray],
    num_feature: int,
    rows_per_batch: int = HYPOTHESIS_ROWS_PER_BATCH,
) -> st.SearchStrategy[list[tuple[float, ...]]]:
    """Batches of rows mixing exact thresholds, their float32 neighbours, NaN, +-inf and any
    float32 bit pattern (subnormals, +-0, NaNs with payloads)."""

    def pick(values: np.ndarray) -> st.SearchStrategy[float]:
        # Index into the array rather than sampled_from(list): keeps the strategy's repr small.
        return st.integers(0, values.size - 1).map(lambda i: float(values[i]))

    any_float32 = st.integers(0, 2**32 - 1).map(
        lambda bits: float(np.array([bits], dtype=np.uint32).view(np.float32)[0])
    )

    def cell(j: int) -> st.SearchStrategy[float]:
        t = thresholds.get(j, np.array([0.0], dtype=np.float32))
        below = np.nextafter(t, np.float32(-np.inf))
        above = np.nextafter(t, np.float32(np.inf))
        special = st.sampled_from([float("nan"), float("inf"), float("-inf")])
        return st.one_of(pick(t), pick(below), pick(above), special, any_float32)

    row = st.tuples(*(cell(j) for j in range(num_feature)))
    return st.lists(row, min_size=rows_per_batch, max_size=rows_per_batch)

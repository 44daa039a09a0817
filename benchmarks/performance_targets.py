"""The performance targets the report judges, with their limits (the one place they live).

A target names a figure, its limit and whether lower is better; ``met`` judges a value.
``BACKEND_TARGETS`` are judged per backend on the wine-shaped 400x6 model
(backend_comparison.py); ``ONE_ROW_OVERHEAD`` on every model, for each way of calling from
Python (overhead.py). Verdicts use the figures of the whole run (medians, p50 over every
call); a best round is shown beside them and never judged.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import WINE_SHAPED

__all__ = ["BACKEND_TARGETS", "ONE_ROW_OVERHEAD", "PerformanceTarget"]


@dataclass(frozen=True, slots=True)
class PerformanceTarget:
    figure: str  # a BackendFigures field, or "overhead_us"
    what: str
    limit: float
    unit: str
    lower_is_better: bool
    model: str | None = None  # None: every model

    def met(self, value: float | None) -> bool | None:
        """True or False, or None where the figure was not measured."""
        if value is None:
            return None
        return value <= self.limit if self.lower_is_better else value >= self.limit

    @property
    def wording(self) -> str:
        """'single-row p50 from Python ≤ 3 µs'."""
        sign = "≤" if self.lower_is_better else "≥"
        limit = f"{self.limit:,.0f}" if self.limit >= 1000 else f"{self.limit:g}"
        return f"{self.what} {sign} {limit} {self.unit}"


BACKEND_TARGETS: tuple[PerformanceTarget, ...] = (
    PerformanceTarget(
        "python_p50_us", "single-row p50 from Python", 3.0, "µs", True, WINE_SHAPED.key
    ),
    PerformanceTarget(
        "python_rows_per_cpu_s",
        "rows per CPU-second on one core, from Python at the largest batch",
        600_000.0,
        "rows/CPU-s",
        False,
        WINE_SHAPED.key,
    ),
    PerformanceTarget(
        "compile_all_targets_s",
        "compile of every target (wall seconds, added up)",
        10.0,
        "s",
        True,
        WINE_SHAPED.key,
    ),
)

ONE_ROW_OVERHEAD = PerformanceTarget(
    "overhead_us",
    "one-row call from Python minus the same call from C (p50s)",
    1.5,
    "µs",
    True,
)

"""Parity with XGBoost per engine and per target, on rows that probe every split.

The rows come from ``edgeboost.compile.parity.parity_rows``: split thresholds exactly, the
float32 just beside them, NaN (missing), +-inf and values across the range. The reference is
XGBoost's ``inplace_predict`` (margin and value). edgeboost engines and targets must agree bit
for bit on margins and within 1 ULP on values; other engines are only reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .build import ModelBuild
from .engines import Engine, Session

__all__ = ["Reference", "compare", "engine_parity", "target_parity"]


class Reference:
    """Parity rows and XGBoost's outputs for them."""

    def __init__(self, model_path: str, n_rows: int) -> None:
        from edgeboost.compile import load_source_model
        from edgeboost.compile.parity import parity_rows, reference_predictions

        source = load_source_model(model_path)
        self.rows = parity_rows(source, n_rows, seed=0)
        self.margin, self.value = reference_predictions(source.booster(), self.rows)
        self.finite_rows = ~np.isinf(self.rows).any(axis=1)


def compare(
    margin: np.ndarray | None, value: np.ndarray, ref_margin: np.ndarray, ref_value: np.ndarray
) -> dict[str, Any]:
    from edgeboost.compile.parity import max_ulp_difference

    def gaps(ours: np.ndarray, ref: np.ndarray) -> tuple[int, float, int]:
        ours = np.asarray(ours, dtype=np.float32).reshape(len(ref), -1)
        ref = np.asarray(ref, dtype=np.float32).reshape(ours.shape)
        differs = (ours.view(np.uint32) != ref.view(np.uint32)).any(axis=1)
        with np.errstate(invalid="ignore"):
            gap = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        biggest = float(np.nanmax(gap)) if gap.size else 0.0
        return int(differs.sum()), biggest, max_ulp_difference(ours, ref)

    report: dict[str, Any] = {"rows": len(ref_value)}
    if margin is not None:
        mismatched, biggest, ulp = gaps(margin, ref_margin)
        report.update(margin_mismatched_rows=mismatched, max_abs_margin_diff=biggest)
        report["max_ulp_margin"] = ulp
    mismatched, biggest, ulp = gaps(value, ref_value)
    report.update(value_mismatched_rows=mismatched, max_abs_value_diff=biggest, max_ulp_value=ulp)
    report["exact"] = (
        margin is not None
        and report["margin_mismatched_rows"] == 0
        and report["max_ulp_value"] <= 1
    )
    return report


def engine_parity(engine: Engine, session: Session, reference: Reference) -> dict[str, Any]:
    mask = slice(None) if engine.accepts_inf else reference.finite_rows
    rows = np.ascontiguousarray(reference.rows[mask])
    try:
        margin, value = session.outputs(rows)
    except Exception as exc:  # a peer that fails is reported; edgeboost failing fails the run
        return {"rows": len(rows), "error": f"{type(exc).__name__}: {exc}", "exact": False}
    report = compare(margin, value, reference.margin[mask], reference.value[mask])
    if not engine.accepts_inf:
        report["note"] = f"{int((~reference.finite_rows).sum())} rows with +-inf left out"
    return report


def target_parity(
    build: ModelBuild,
    reference: Reference,
    n_rows: int,
    *,
    skip_host: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Each target's library run by the parity driver (under qemu when foreign). ``skip_host``
    when the C engine already ran this machine's library through the same driver."""
    from edgeboost.compile.emulation import EmulationError, needs_emulation, run_library
    from edgeboost.runtime.manifest import Manifest

    results: dict[str, dict[str, Any]] = {}
    for triple, built in build.targets.items():
        if skip_host and not needs_emulation(triple):
            continue
        count = len(reference.rows) if not needs_emulation(triple) else n_rows
        rows = reference.rows[:count]
        library = built.bundle / Manifest.read(built.bundle).targets[triple].file
        try:
            margin, value = run_library(triple, library, rows)
        except EmulationError as exc:
            results[triple] = {"rows": count, "skipped": str(exc).splitlines()[0], "exact": None}
            say(
                f"  {build.case.key} {triple} ({build.backend}): parity skipped "
                f"({results[triple]['skipped']})"
            )
            continue
        report = compare(margin, value, reference.margin[:count], reference.value[:count])
        report["emulated"] = needs_emulation(triple)
        results[triple] = report
        say(
            f"  {build.case.key} {triple} ({build.backend}): {count:,} rows, "
            f"{report['margin_mismatched_rows']} margins differ"
        )
    return results

"""Parity with XGBoost per engine and per target, on rows that probe every split.

The rows come from ``edgeboost.compile.parity.parity_rows``: split thresholds exactly, the
float32 just beside them, NaN (missing), +-inf and values across the range. The reference is
XGBoost's ``inplace_predict`` (margin and value). edgeboost engines and targets must agree bit
for bit on margins and within 1 ULP on values; other engines are only reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .engines import Engine, Session
from .results import BackendBuild, ParityNotChecked, ParityReport

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
) -> ParityReport:
    """Outputs against XGBoost's: exact when every margin is bit-identical and every value
    within 1 ULP (an engine without margins is never exact)."""
    from edgeboost.compile.parity import max_ulp_difference

    def gaps(ours: np.ndarray, ref: np.ndarray) -> tuple[int, float, int]:
        ours = np.asarray(ours, dtype=np.float32).reshape(len(ref), -1)
        ref = np.asarray(ref, dtype=np.float32).reshape(ours.shape)
        differs = (ours.view(np.uint32) != ref.view(np.uint32)).any(axis=1)
        with np.errstate(invalid="ignore"):
            gap = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        biggest = float(np.nanmax(gap)) if gap.size else 0.0
        return int(differs.sum()), biggest, max_ulp_difference(ours, ref)

    value_mismatched, value_gap, value_ulp = gaps(value, ref_value)
    if margin is None:
        return ParityReport(
            rows=len(ref_value),
            exact=False,
            value_mismatched_rows=value_mismatched,
            max_abs_value_diff=value_gap,
            max_ulp_value=value_ulp,
        )
    mismatched, biggest, ulp = gaps(margin, ref_margin)
    return ParityReport(
        rows=len(ref_value),
        exact=mismatched == 0 and value_ulp <= 1,
        value_mismatched_rows=value_mismatched,
        max_abs_value_diff=value_gap,
        max_ulp_value=value_ulp,
        margin_mismatched_rows=mismatched,
        max_abs_margin_diff=biggest,
        max_ulp_margin=ulp,
    )


def engine_parity(
    engine: Engine, session: Session, reference: Reference, one_row_rows: int
) -> ParityReport | ParityNotChecked:
    """The engine's outputs for all of the reference's rows in one call, then for the first
    ``one_row_rows`` of them one row per call (where the session takes one-row calls)."""
    mask = slice(None) if engine.accepts_inf else reference.finite_rows
    rows = np.ascontiguousarray(reference.rows[mask])
    ref_margin, ref_value = reference.margin[mask], reference.value[mask]
    try:
        margin, value = session.outputs(rows)
        one_row = None
        if session.one_row_parity and one_row_rows > 0:
            count = min(one_row_rows, len(rows))
            singles = [session.outputs(rows[i : i + 1]) for i in range(count)]
            one_margin = None if margin is None else np.concatenate([m for m, _ in singles])
            one_value = np.concatenate([v for _, v in singles])
            one_row = compare(one_margin, one_value, ref_margin[:count], ref_value[:count])
    except Exception as exc:  # a peer that fails is reported; edgeboost failing fails the run
        return ParityNotChecked(rows=len(rows), reason=f"{type(exc).__name__}: {exc}", failed=True)
    report = compare(margin, value, ref_margin, ref_value)
    notes = [engine.parity_note] if engine.parity_note else []
    if not engine.accepts_inf:
        notes.append(f"{int((~reference.finite_rows).sum())} rows with +-inf left out")
    return replace(report, note="; ".join(notes), one_row_calls=one_row)


def target_parity(
    build: BackendBuild,
    reference: Reference,
    n_rows: int,
    *,
    skip_host: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, ParityReport | ParityNotChecked]:
    """Each target's library run by the parity driver (under qemu when foreign). ``skip_host``
    when the C engine already ran this machine's library through the same driver."""
    from edgeboost.compile.emulation import EmulationError, needs_emulation, run_library
    from edgeboost.runtime.manifest import Manifest

    results: dict[str, ParityReport | ParityNotChecked] = {}
    for triple, built in build.targets.items():
        if skip_host and not needs_emulation(triple):
            continue
        count = len(reference.rows) if not needs_emulation(triple) else n_rows
        rows = reference.rows[:count]
        library = built.bundle / Manifest.read(built.bundle).targets[triple].file
        try:
            margin, value = run_library(triple, library, rows)
        except EmulationError as exc:
            reason = str(exc).splitlines()[0]
            results[triple] = ParityNotChecked(rows=count, reason=reason, failed=False)
            say(f"  {build.model} {triple} ({build.backend}): parity skipped ({reason})")
            continue
        report = compare(margin, value, reference.margin[:count], reference.value[:count])
        results[triple] = replace(report, emulated=needs_emulation(triple))
        say(
            f"  {build.model} {triple} ({build.backend}): {count:,} rows, "
            f"{report.margin_mismatched_rows} margins differ"
        )
    return results

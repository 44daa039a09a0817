"""The "Parity with XGBoost" section: every engine and every target, row counts and gaps."""

from __future__ import annotations

from ..results import ParityNotChecked, ParityReport, RunResults
from .text import code, num, table

__all__ = ["parity_section"]


def _row(model: str, name: str, r: ParityReport | ParityNotChecked) -> list[str]:
    if isinstance(r, ParityNotChecked):
        what = f"error: {r.reason[:80]}" if r.failed else f"skipped: {r.reason}"
        return [model, name, f"{r.rows:,}", what, "", "", "", "no" if r.failed else ""]
    differing = r.margin_mismatched_rows
    biggest = r.max_abs_margin_diff if r.max_abs_margin_diff is not None else r.max_abs_value_diff
    return [
        model,
        name + (f" ({r.note})" if r.note else ""),
        f"{r.rows:,}",
        "n/a (no margins)" if differing is None else f"{differing:,}",
        num(biggest),
        "n/a" if r.max_ulp_margin is None else str(r.max_ulp_margin),
        str(r.max_ulp_value),
        "yes" if r.exact else "no",
    ]


def parity_section(results: RunResults) -> list[str]:
    out = ["## Parity with XGBoost", ""]
    out.append(
        "Protocol: rows from `edgeboost.compile.parity.parity_rows` (split thresholds exactly, "
        "the float32 just beside them, NaN, +-inf, values across the range), compared with "
        "XGBoost `inplace_predict` margins and values. Margins compared as float32 bit "
        "patterns; ULP = distance in units of last place; the absolute difference is the "
        "margins' (the values' where an engine gives no margins). edgeboost engines and "
        "targets must be bit-exact on margins (values within 1 ULP): **the run fails "
        "otherwise**. Each engine gets every row in one call, then the first "
        f"{results.config.one_row_parity_rows:,} again with one row per call (an engine may "
        "predict small batches another way). Foreign targets run the library through "
        "`native/parity_driver.c` under qemu-user."
    )
    out.append("")
    header = [
        "model",
        "engine",
        "rows",
        "margins differing",
        "max abs diff",
        "max ULP margin",
        "max ULP value",
        "exact",
    ]
    rows = []
    for model_key, model in results.models.items():
        for key, report in model.parity.items():
            rows.append(_row(model_key, code(key), report))
            if isinstance(report, ParityReport) and report.one_row_calls is not None:
                rows.append(_row(model_key, f"{code(key)}, one row per call", report.one_row_calls))
        for backend, per_target in model.target_parity.items():
            for triple, report in per_target.items():
                emulated = isinstance(report, ParityReport) and report.emulated
                name = f"edgeboost {backend} library on {triple}" + (" (qemu)" if emulated else "")
                rows.append(_row(model_key, name, report))
    out += [*table(header, rows), ""]
    out.append(
        "This machine's own target is the C engines' row: the same library through the same "
        "parity driver."
    )
    out.append("")
    return out

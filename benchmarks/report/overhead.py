"""The "One-row call" section: what Python adds to the library's own time, per model."""

from __future__ import annotations

from edgeboost.compile import DEFAULT_BACKEND

from ..models import TIMING_ROWS_MISSING
from ..overhead import DISTINCT_ROWS, JUDGED_WAYS
from ..performance_targets import ONE_ROW_OVERHEAD
from ..results import Failed, OneRowOverhead, RunResults
from .text import table

__all__ = ["overhead_section"]


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _model_table(overhead: OneRowOverhead) -> list[str]:
    rows = []
    for way, call in overhead.calls.items():
        verdict = ""
        if way in overhead.met:
            verdict = {True: "**met**", False: "**not met**", None: "not measured"}[
                overhead.met[way]
            ]
        rows.append(
            [
                call.label,
                _us(call.p50_us),
                f"{_us(call.round_p50_us.min)}-{_us(call.round_p50_us.max)}",
                _us(call.overhead_us),
                verdict,
                f"{call.calls_per_round:,}",
            ]
        )
    header = [
        "way",
        "p50 µs",
        "rounds' p50 µs",
        "minus C, µs",
        f"≤ {overhead.target.limit:g} µs",
        "calls per round",
    ]
    return table(header, rows)


def overhead_section(results: RunResults) -> list[str]:
    measured = {k: m.overhead for k, m in results.models.items() if m.overhead is not None}
    if not measured:
        return []
    judged = ", ".join(f"`{way}`" for way in JUDGED_WAYS)
    out = ["## One-row call: what Python adds", ""]
    out.append(
        f"Target: {ONE_ROW_OVERHEAD.wording}, for each way of calling `Model.predict` "
        f"({judged}), on every model."
    )
    out.append("")
    out.append(
        f"Protocol: the {DEFAULT_BACKEND} backend's library for this machine, one row per call, "
        f"{DISTINCT_ROWS} distinct rows in turn, every way in the same {results.config.repeats} "
        "rounds (the first "
        "way rotating per round): from C, the c_bench harness linked against the library; "
        "from Python (this process), `edgeboost_predict` through cffi on C buffers made before "
        "timing (the least any Python caller pays), and `Model.predict` with a numpy row, a "
        f"list row and a dict row, {TIMING_ROWS_MISSING:.0%} of the values missing as in the "
        "timing rows (NaN; None in dicts, as JSON's null decodes), and a dict row of rows with "
        "no missing value. p50 over every call of every round; overhead = that way's "
        "p50 minus C's p50. The no-op row is the timing loop itself (`perf_counter_ns` around "
        "a call of a builtin): part of every Python figure, shown and not subtracted."
    )
    out.append("")
    for model_key, overhead in measured.items():
        out += [f"### {model_key}", ""]
        if isinstance(overhead, Failed):
            out += [f"Not measured: {overhead.error}", ""]
            continue
        out += [*_model_table(overhead), ""]
    return out

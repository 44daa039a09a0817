"""The summary: the parity verdict, one row per engine, and edgeboost's ratios to each peer."""

from __future__ import annotations

from collections.abc import Callable

from edgeboost.compile import DEFAULT_BACKEND

from ..backend_comparison import BACKEND_ENGINES
from ..engines import edgeboost_key
from ..results import (
    ModelResults,
    ParityNotChecked,
    ParityReport,
    RunResults,
    ServingResult,
    TimingSummary,
)
from .text import code, num, ratio_phrase, table

__all__ = ["headline_table", "ratio_lines", "summary_section"]

# The edgeboost engines the ratios are stated for: each backend from Python with numpy, and
# for memory the default backend from a numpy-free process (what a device runs).
_FROM_PYTHON = {backend: engines.python for backend, engines in BACKEND_ENGINES.items()}
_FOR_MEMORY = edgeboost_key(DEFAULT_BACKEND, "array")


def summary_section(results: RunResults) -> list[str]:
    verdict = (
        "**Parity: every edgeboost engine and target bit-exact with XGBoost.**"
        if not results.parity_failures
        else f"**Parity FAILED:** {'; '.join(results.parity_failures)}"
    )
    return ["## Summary", "", verdict, "", *headline_table(results), "", *ratio_lines(results), ""]


def headline_table(results: RunResults) -> list[str]:
    """One row per engine: the numbers the CLI prints."""
    largest = results.largest_batch
    models = list(results.models)
    header = ["engine"]
    for m in models:
        header += [f"{m}: 1 row p50 µs", f"{m}: rows/CPU-s at {num(largest)}"]
    header += [f"{models[0]}: peak RSS MiB", "parity with XGBoost"]
    rows = []
    for key in results.engines:
        row = [code(key)]
        for m in models:
            model = results.models[m]
            single, bulk = model.timing_of(key, 1), model.timing_of(key, largest)
            row.append(num(single.call_us.p50) if single else "—")
            row.append(num(bulk.rows_per_cpu_s.median) if bulk else "—")
        startup = results.models[models[0]].startup_of(key)
        row.append(f"{startup.peak_rss_mib:.1f}" if startup else "—")
        row.append(_parity_word(results, key))
        rows.append(row)
    return table(header, rows)


def _parity_word(results: RunResults, key: str) -> str:
    words = []
    for model in results.models.values():
        report = model.parity.get(key)
        if report is None:
            continue
        if isinstance(report, ParityNotChecked):
            words.append("error")
            continue
        word = _agreement(report)
        if report.one_row_calls is not None and _agreement(report.one_row_calls) != word:
            word += f" (one row per call: {_agreement(report.one_row_calls)})"
        words.append(word)
    return ", ".join(dict.fromkeys(words)) or "—"


def _agreement(report: ParityReport) -> str:
    if report.margin_mismatched_rows is None:
        return f"values ≤{report.max_abs_value_diff:.1g}"
    if report.margin_mismatched_rows == 0:
        return "bit-exact"
    return f"{100 * report.margin_mismatched_rows / report.rows:.0f}% differ"


def _speed_lines(
    results: RunResults,
    model: ModelResults,
    batch: int,
    heading: str,
    figure: Callable[[TimingSummary], float],
    *,
    higher_is_better: bool,
    good: str,
    bad: str,
) -> list[str]:
    """One heading, then one line per peer with each backend's ratio to it (the figures
    themselves are in the table above)."""
    ours = {
        backend: entry
        for backend, key in _FROM_PYTHON.items()
        if key in results.engines and (entry := model.timing_of(key, batch))
    }
    if not ours:
        return []
    lines = [f"- **{heading}**:"]
    for peer in results.peers():
        theirs = model.timing_of(peer, batch)
        if not theirs:
            continue
        phrases = ", ".join(
            f"{b} backend "
            + ratio_phrase(
                figure(e), figure(theirs), higher_is_better=higher_is_better, good=good, bad=bad
            )
            for b, e in ours.items()
        )
        lines.append(f"  - than {code(peer)}: {phrases}")
    return lines


def ratio_lines(results: RunResults) -> list[str]:
    """Ratios of edgeboost (each backend, from Python with numpy) to each peer, from this run's
    medians."""
    lines: list[str] = []
    largest = results.largest_batch
    for model_key, model in results.models.items():
        lines += _speed_lines(
            results,
            model,
            1,
            f"{model_key}, single row, p50 from Python with numpy",
            lambda t: t.call_us.p50,
            higher_is_better=False,
            good="faster",
            bad="slower",
        )
        lines += _speed_lines(
            results,
            model,
            largest,
            f"{model_key}, {largest:,} rows per call, rows per CPU-second from Python with numpy",
            lambda t: t.rows_per_cpu_s.median,
            higher_is_better=True,
            good="more",
            bad="fewer",
        )
        mine = model.startup_of(_FOR_MEMORY)
        if mine:
            lines.append(f"- **{model_key}, fresh process peak RSS** of {code(_FOR_MEMORY)}:")
            for peer in results.peers():
                theirs = model.startup_of(peer)
                if theirs:
                    phrase = ratio_phrase(
                        mine.peak_rss_mib,
                        theirs.peak_rss_mib,
                        higher_is_better=False,
                        good="smaller",
                        bad="larger",
                    )
                    lines.append(f"  - {phrase} than {code(peer)}")
    serving = results.serving
    if isinstance(serving, ServingResult) and (p50 := serving.default.round_trip_ms.p50):
        low, high = serving.old_design_round_trip_ms
        lines.append(
            f"- **serving round trip** p50: {low / p50:.3g}-{high / p50:.3g}x faster than "
            f"the old design's {low:g}-{high:g} ms (Lambda in Docker)"
        )
    return lines

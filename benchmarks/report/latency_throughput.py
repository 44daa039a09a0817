"""The "Latency and throughput" section: every engine at every batch size, from one process."""

from __future__ import annotations

from ..models import TIMING_ROWS_MISSING
from ..results import Failed, ModelResults, RunResults
from .text import code, num, table

__all__ = ["latency_throughput_section"]


def _protocol(results: RunResults) -> str:
    config = results.config
    return (
        "Protocol: every engine lives in the same process and is measured round-robin: per "
        f"model and batch size, {config.repeats} rounds (fewer, but at least "
        f"{config.min_repeats}, where they would take over {config.batch_budget_seconds:g} s: "
        "the rounds are given per table), each running every engine once, the first engine "
        "rotating per round. One measurement calls the engine on distinct prepared batches "
        f"until about {config.measure_seconds:g} s have passed (calibrated after a warm-up; a "
        "single call, without warm-up, where the smaller batches show one call takes longer). "
        "Inputs are prepared before timing in each engine's own form (numpy float32, "
        "array.array, a list of dicts keyed by feature name); anything the engine's API needs "
        "on top (a DMatrix) is built inside the timed call. Latency: `perf_counter_ns` around "
        "each call, percentiles over all calls of all rounds. Throughput: rows per wall second "
        "and rows per CPU-second (`process_time`, all threads of this process, so a busy "
        "co-tenant does not distort it), median and min-max over rounds. The C harness times "
        "itself in its own process with `clock_gettime`. Rows are uniform over each feature's "
        f"split-threshold range with {TIMING_ROWS_MISSING:.0%} missing."
    )


def _model_tables(results: RunResults, model_key: str, model: ModelResults) -> list[str]:
    batches = list(results.config.batch_sizes)
    out = [f"### {model_key}: single row (µs per call)", ""]
    rows = []
    for key in results.engines:
        entry = model.timing_of(key, 1)
        if entry:
            c = entry.call_us
            rows.append(
                [
                    code(key),
                    num(c.p50),
                    num(c.p99),
                    num(c.min),
                    f"{entry.calls_per_round:,} x {entry.rounds}",
                ]
            )
    out += [*table(["engine", "p50", "p99", "min", "calls x rounds"], rows), ""]
    for per_cpu, title in ((True, "rows per CPU-second"), (False, "rows per wall second")):
        out += [f"### {model_key}: {title}, median [min-max] by rows per call", ""]
        rows = []
        for key in results.engines:
            cells = [code(key)]
            for b in batches:
                entry = model.timing_of(key, b)
                if entry:
                    s = entry.rows_per_cpu_s if per_cpu else entry.rows_per_s
                    cells.append(f"{num(s.median)} [{num(s.min)}-{num(s.max)}]")
                else:
                    failed = isinstance(model.timing.get(key, {}).get(b), Failed)
                    cells.append("error" if failed else "—")
            rows.append(cells)
        out += [*table(["engine", *[f"{b:,}" for b in batches]], rows), ""]
    rounds = []
    for b in batches:
        counts = {e.rounds for k in results.engines if (e := model.timing_of(k, b))}
        if counts:
            unit = "row" if b == 1 else "rows"
            rounds.append(f"{b:,} {unit}: {'/'.join(str(c) for c in sorted(counts))}")
    if rounds:
        out += [f"Rounds per batch size: {', '.join(rounds)}.", ""]
    threads = []
    for key in results.engines:
        entry = model.timing_of(key, max(batches))
        if entry and entry.cpu_per_wall > 1.2:
            threads.append(f"{code(key)} {entry.cpu_per_wall:.1f}")
    if threads:
        out += [
            f"CPU-seconds per wall second at {max(batches):,} rows (engines using several "
            f"threads): {', '.join(threads)}.",
            "",
        ]
    if model.engines_left_out:
        reasons: dict[str, list[str]] = {}
        for key, reason in model.engines_left_out.items():
            reasons.setdefault(reason, []).append(code(key))
        listed = "; ".join(f"{', '.join(keys)} ({why})" for why, keys in reasons.items())
        out += [f"Not measured on {model_key}: {listed}.", ""]
    return out


def latency_throughput_section(results: RunResults) -> list[str]:
    out = ["## Latency and throughput", "", _protocol(results), ""]
    out += ["![single-row latency](latency.png)", ""]
    for model_key, model in results.models.items():
        out += _model_tables(results, model_key, model)
    out += ["![rows per CPU-second](throughput.png)", ""]
    return out

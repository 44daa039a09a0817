"""Latency and throughput: every engine in one process, interleaved round by round.

Protocol, per model and batch size (smallest first): each engine gets its distinct batches
prepared (untimed), is warmed up and calibrated to about ``measure_seconds`` of calls per
measurement (one call, without warm-up, when the smaller batches show that one call takes
longer than that); then ``repeats`` rounds (fewer when they would take longer than
``batch_budget_seconds``, never fewer than ``min_repeats``) run every engine once each, the
starting engine rotating per round (A B C, B C A, ...), so a burst of load from a co-tenant
hits all engines alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .config import BenchConfig
from .engines import Inputs, Session
from .measure import Measurement
from .results import Failed, Percentiles, Spread, TimingSummary

__all__ = ["round_p50s_us", "run_timing", "spread", "summarize"]


def _calibrate(
    session: Session, inputs: Inputs, config: BenchConfig, ns_per_row: float | None
) -> tuple[int, float]:
    """Calls per measurement, and the ns per row it saw. A batch that the previous batch size
    says takes longer than a whole measurement gets one call and no warm-up: a call that long
    is not changed by a first-call cost, and running it twice more would cost minutes."""
    target_ns = config.measure_seconds * 1e9
    if ns_per_row is not None and ns_per_row * inputs.batch >= target_ns:
        return 1, ns_per_row
    per_call = max(session.measure(inputs, 1).wall_ns, 1)  # also the warm-up
    if target_ns / per_call > 10:
        per_call = max(session.measure(inputs, 10).wall_ns // 10, 1)
    calls = int(min(config.max_calls, max(1, math.ceil(target_ns / per_call))))
    return calls, per_call / inputs.batch


def summarize(measurements: Sequence[Measurement]) -> TimingSummary:
    """Across rounds: median, min and max of rates and of each round's p50 latency (the best
    round shows what the code does when co-tenants are quiet); across all calls: latency
    percentiles."""
    rates = np.array([m.rows_per_second for m in measurements])
    cpu_rates = np.array([m.rows_per_cpu_second for m in measurements])
    samples = np.concatenate([np.asarray(m.per_call_ns, dtype=np.float64) for m in measurements])
    samples_us = samples / 1e3
    utilisation = [m.cpu_ns / max(m.wall_ns, 1) for m in measurements]
    return TimingSummary(
        batch=measurements[0].batch,
        rounds=len(measurements),
        calls_per_round=measurements[0].calls,
        rows_per_s=spread(rates),
        rows_per_cpu_s=spread(cpu_rates),
        call_us=Percentiles(
            p50=float(np.percentile(samples_us, 50)),
            p99=float(np.percentile(samples_us, 99)),
            min=float(samples_us.min()),
            max=float(samples_us.max()),
            calls=int(samples_us.size),
        ),
        round_p50_us=round_p50s_us(measurements),
        cpu_per_wall=float(np.median(utilisation)),
    )


def round_p50s_us(measurements: Sequence[Measurement]) -> Spread:
    """Each round's p50 per call, in µs, across rounds."""
    return spread(
        np.array([np.percentile(np.asarray(m.per_call_ns), 50) / 1e3 for m in measurements])
    )


def spread(values: np.ndarray) -> Spread:
    return Spread(median=float(np.median(values)), min=float(values.min()), max=float(values.max()))


def run_timing(
    sessions: Mapping[str, Session],
    rows: np.ndarray,
    config: BenchConfig,
    *,
    say: Callable[[str], None] = print,
) -> dict[str, dict[int, TimingSummary | Failed]]:
    """engine key -> rows per call -> summary, or what failed."""
    results: dict[str, dict[int, TimingSummary | Failed]] = {key: {} for key in sessions}
    ns_per_row: dict[str, float] = {}
    for batch in sorted(config.batch_sizes):
        if batch > len(rows):
            say(f"  batch {batch}: skipped, only {len(rows)} rows")
            continue
        live = list(sessions)
        inputs: dict[str, Inputs] = {}
        calls: dict[str, int] = {}
        for key in live[:]:
            try:
                inputs[key] = sessions[key].prepare_inputs(rows, batch)
                calls[key], ns_per_row[key] = _calibrate(
                    sessions[key], inputs[key], config, ns_per_row.get(key)
                )
            except Exception as exc:  # a peer that cannot run this batch is reported, not fatal
                results[key][batch] = Failed(f"{type(exc).__name__}: {exc}")
                live.remove(key)
        round_seconds = sum(calls[k] * ns_per_row[k] * batch for k in live) / 1e9
        affordable = int(config.batch_budget_seconds // max(round_seconds, 1e-9))
        repeats = max(config.min_repeats, min(config.repeats, affordable))
        measured: dict[str, list[Measurement]] = {key: [] for key in live}
        for round_index in range(repeats):
            start = round_index % len(live) if live else 0
            for key in live[start:] + live[:start]:
                measured[key].append(sessions[key].measure(inputs[key], calls[key]))
        inputs.clear()
        for key in live:
            results[key][batch] = summarize(measured[key])
        say(f"  batch {batch}: {repeats} rounds over {len(live)} engines")
    return results

"""Soak: the inference component under steady load for minutes, watched for leaks and losses.

The same three processes as the serving benchmark (broker, component from its zip, consumer
with the real awsiotsdk client). ``concurrency`` client threads each send a request as soon
as the previous reply arrived, for ``seconds``. Every reply's id is counted: a request with no
reply within ``serving.REPLY_TIMEOUT_S`` is lost, a second reply with the same id is a
duplicate. The server's RSS is sampled every ``RSS_SAMPLE_S``; its slope after the first
``SETTLED_FRACTION`` of the run (start-up and warm caches) is what a leak would show as.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .coldstart import proc_status_kib
from .results import RssTrend, SoakResult
from .serving import percentiles, process_cpu_seconds, running_component

__all__ = ["RSS_SAMPLE_S", "SETTLED_FRACTION", "TREND_WINDOW_S", "measure_soak", "rss_trend"]

SETTLED_FRACTION = 0.2  # the RSS slope is fitted after this share of the run
RSS_SAMPLE_S = 1.0
# Growth is the median RSS of the settled part's last window minus that of its first.
TREND_WINDOW_S = 30.0


def measure_soak(
    bundle: Path, *, seconds: float, concurrency: int = 8, say: Callable[[str], None] = print
) -> SoakResult:
    with running_component(bundle) as running:
        consumer, pid = running.consumer, running.server.pid
        stop = threading.Event()
        latencies: list[list[float]] = [[] for _ in range(concurrency)]
        sent, lost = [0] * concurrency, [0] * concurrency
        rss: list[tuple[float, int]] = []
        started = time.monotonic()

        def client(slot: int) -> None:
            while not stop.is_set():
                sent[slot] += 1
                begun = time.perf_counter_ns()
                reply = consumer.request(f"soak-{slot}-{sent[slot]}", [running.record])
                if reply is None or "predictions" not in reply:
                    lost[slot] += 1
                else:
                    latencies[slot].append((time.perf_counter_ns() - begun) / 1e6)

        def sample() -> None:
            while not stop.wait(RSS_SAMPLE_S):
                value = proc_status_kib("VmRSS", pid)
                if value is not None:
                    rss.append((time.monotonic() - started, value))

        rss.append((0.0, proc_status_kib("VmRSS", pid) or 0))
        cpu_before = process_cpu_seconds(pid)
        threads = [
            threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)
        ]
        threads.append(threading.Thread(target=sample, daemon=True))
        for thread in threads:
            thread.start()
        last_report = started
        while time.monotonic() - started < seconds:
            time.sleep(min(1.0, seconds - (time.monotonic() - started)))
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                rss_mib = rss[-1][1] / 1024
                say(
                    f"  soak {last_report - started:.0f} s: {sum(sent)} requests, "
                    f"RSS {rss_mib:.1f} MiB"
                )
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        elapsed = time.monotonic() - started
        cpu = process_cpu_seconds(pid) - cpu_before
        time.sleep(1.0)  # a late duplicate would arrive now
        duplicates = sum(
            n - 1 for key, n in consumer.replies_by_id.items() if key.startswith("soak-") and n > 1
        )
    answered = sum(map(len, latencies))
    result = SoakResult(
        seconds=elapsed,
        concurrency=concurrency,
        requests=sum(sent),
        answered=answered,
        lost=sum(lost),
        duplicates=duplicates,
        requests_per_s=answered / elapsed,
        round_trip_ms=percentiles([v for slot in latencies for v in slot]),
        server_cpu_ms_per_request=1e3 * cpu / max(answered, 1),
        rss=rss_trend(rss),
        exit_codes=dict(running.exit_codes),
    )
    say(
        f"  soak: {answered} answered in {elapsed:.0f} s ({result.requests_per_s:.0f} req/s), "
        f"lost {result.lost}, duplicates {duplicates}, RSS growth after warm-up "
        f"{result.rss.growth_settled_mib:+.2f} MiB"
    )
    return result


def rss_trend(samples: list[tuple[float, int]]) -> RssTrend:
    """(seconds since start, KiB) samples -> the trend after warm-up."""
    times = np.array([t for t, _ in samples])
    mib = np.array([kib / 1024 for _, kib in samples])
    settled = times >= SETTLED_FRACTION * times[-1]
    slope = float(np.polyfit(times[settled], mib[settled], 1)[0]) if settled.sum() >= 3 else None
    # Medians of the settled part's first and last windows (robust to a sample taken
    # mid-allocation).
    settled_t, settled_m = times[settled], mib[settled]
    head = settled_m[settled_t <= settled_t[0] + TREND_WINDOW_S]
    tail = settled_m[settled_t >= settled_t[-1] - TREND_WINDOW_S]
    return RssTrend(
        start_mib=float(mib[0]),
        end_mib=float(mib[-1]),
        max_mib=float(mib.max()),
        settled_from_s=float(settled_t[0]),
        slope_mib_per_min=None if slope is None else slope * 60,
        growth_settled_mib=float(np.median(tail) - np.median(head)),
        samples=len(samples),
    )

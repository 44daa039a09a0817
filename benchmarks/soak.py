"""Soak: the inference component under steady load for minutes, watched for leaks and losses.

The same three processes as the serving benchmark (broker, component from its zip, consumer
with the real awsiotsdk client). ``concurrency`` client threads each send a request as soon
as the previous reply arrived, for ``seconds``. Every reply's id is counted: a request with no
reply within 10 s is lost, a second reply with the same id is a duplicate. The server's RSS
is sampled once a second; its slope over the last 80% of the run (after start-up and warm
caches) is what a leak would show as.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .coldstart import proc_status_kib
from .serving import percentiles, process_cpu_seconds, running_component

__all__ = ["measure_soak", "soak_section"]

_SETTLED_FRACTION = 0.2  # the RSS slope is fitted after this share of the run


def measure_soak(
    bundle: Path, *, seconds: float, concurrency: int = 8, say: Callable[[str], None] = print
) -> dict[str, Any]:
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
            while not stop.wait(1.0):
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
    result = {
        "seconds": elapsed,
        "concurrency": concurrency,
        "requests": sum(sent),
        "answered": answered,
        "lost": sum(lost),
        "duplicates": duplicates,
        "requests_per_s": answered / elapsed,
        "round_trip_ms": percentiles([v for slot in latencies for v in slot]),
        "server_cpu_ms_per_request": 1e3 * cpu / max(answered, 1),
        "rss": _rss_summary(rss),
        "exit_codes": running.exit_codes,
    }
    say(
        f"  soak: {answered} answered in {elapsed:.0f} s ({result['requests_per_s']:.0f} req/s), "
        f"lost {result['lost']}, duplicates {duplicates}, RSS growth after warm-up "
        f"{result['rss']['growth_settled_mib']:+.2f} MiB"
    )
    return result


def _rss_summary(samples: list[tuple[float, int]]) -> dict[str, Any]:
    times = np.array([t for t, _ in samples])
    mib = np.array([kib / 1024 for _, kib in samples])
    settled = times >= _SETTLED_FRACTION * times[-1]
    slope = float(np.polyfit(times[settled], mib[settled], 1)[0]) if settled.sum() >= 3 else None
    # Growth between the first and the last 30 s of the settled part, medians (robust to a
    # sample taken mid-allocation).
    settled_t, settled_m = times[settled], mib[settled]
    head = settled_m[settled_t <= settled_t[0] + 30]
    tail = settled_m[settled_t >= settled_t[-1] - 30]
    return {
        "start_mib": float(mib[0]),
        "end_mib": float(mib[-1]),
        "max_mib": float(mib.max()),
        "settled_from_s": float(settled_t[0]),
        "slope_mib_per_min": None if slope is None else slope * 60,
        "growth_settled_mib": float(np.median(tail) - np.median(head)),
        "samples": len(samples),
    }


def soak_section(soak: dict[str, Any] | None) -> list[str]:
    out = ["## Soak", ""]
    if not soak:
        return [*out, "Not run (`edgeboost bench --soak SECONDS`).", ""]
    if "error" in soak:
        return [*out, f"Not measured: {soak['error']}", ""]
    rss, rt = soak["rss"], soak["round_trip_ms"]
    out.append(
        "Protocol: three processes as on a device: the local broker, the inference component "
        "run from its unpacked Greengrass zip (`edgeboost serve`, built-in transport) and a "
        f"consumer with the awsiotsdk client; {soak['concurrency']} client threads in a closed "
        f"loop for {soak['seconds']:.0f} s, one named-feature record per request. Lost: no "
        "reply within 10 s; duplicate: a second reply with the same id. The server's RSS "
        f"sampled every second; growth and slope over the run after {rss['settled_from_s']:.0f} s "
        "(medians of its first and last 30 s; least squares)."
    )
    out.append("")
    slope = rss["slope_mib_per_min"]
    exit_codes = ", ".join(f"{k} {v}" for k, v in soak["exit_codes"].items())
    out += [
        "| figure | value |",
        "| --- | --- |",
        f"| requests per second | {soak['requests_per_s']:,.0f} |",
        f"| round trip p50 / p99 ms | {rt['p50']:.2f} / {rt['p99']:.2f} |",
        f"| requests / answered | {soak['requests']:,} / {soak['answered']:,} |",
        f"| lost / duplicate replies | {soak['lost']} / {soak['duplicates']} |",
        f"| server CPU per request | {soak['server_cpu_ms_per_request']:.3f} ms |",
        f"| server RSS start / end / max MiB | {rss['start_mib']:.1f} / {rss['end_mib']:.1f} / "
        f"{rss['max_mib']:.1f} |",
        f"| RSS growth after warm-up | {rss['growth_settled_mib']:+.2f} MiB |",
        "| RSS slope after warm-up | "
        + ("n/a" if slope is None else f"{slope:+.3f} MiB per minute")
        + " |",
        f"| exit codes after SIGTERM | {exit_codes} |",
        "",
    ]
    return out

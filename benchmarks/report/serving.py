"""The "Serving over Greengrass IPC" section: round trips, sustained load, both transports."""

from __future__ import annotations

from ..results import Failed, RunResults, TransportResult
from ..serving import REPLY_TIMEOUT_S, RSS_SAMPLE_SECONDS, WARM_UP_REQUESTS
from .text import table

__all__ = ["serving_section"]


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def serving_section(results: RunResults) -> list[str]:
    serving = results.serving
    out = ["## Serving over Greengrass IPC", ""]
    if serving is None:
        return [*out, "Not run.", ""]
    if isinstance(serving, Failed):
        return [*out, f"Not measured: {serving.error}", ""]
    default = serving.default
    out.append(
        "Protocol: three processes as on a device: the local broker (`python -m "
        "edgeboost.broker`, a stand-in for the Nucleus, with the packaged recipes' access "
        "control), the inference component run from its unpacked Greengrass zip (`python -m "
        "edgeboost serve bundle`: no numpy) and this process as the consumer with the real "
        f"awsiotsdk V2 client. Round trip: {default.round_trips:,} requests one at a time, "
        f"each {default.request}, from publish to reply received (after {WARM_UP_REQUESTS} "
        f"warm-up requests). Sustained: {default.concurrency} client threads in a closed loop "
        f"for {results.config.serving_seconds:g} s; the server's RSS sampled from /proc every "
        f"{RSS_SAMPLE_SECONDS * 1e3:.0f} ms. Lost: no reply within {REPLY_TIMEOUT_S:g} s. "
        f"The table is the default transport's ({serving.default_transport})."
    )
    out.append("")
    rt = default.round_trip_ms
    low, high = serving.old_design_round_trip_ms
    rows = [
        ["round trip p50 / p90 / p99 ms", f"{_ms(rt.p50)} / {_ms(rt.p90)} / {_ms(rt.p99)}"],
        ["round trip min / max ms", f"{_ms(rt.min)} / {_ms(rt.max)}"],
        ["old design (Lambda in Docker) round trip", f"{low:g}-{high:g} ms"],
        ["sustained requests per second", f"{default.requests_per_s:,.0f}"],
        ["server CPU per request", f"{default.server_cpu_ms_per_request:.3f} ms"],
        [
            "server RSS idle / under load (max) / peak MiB",
            f"{default.server_rss_idle_mib:.1f} / "
            f"{_mib(default.server_rss_under_load_max_mib)} / "
            f"{default.server_peak_rss_mib:.1f}",
        ],
        [
            "lost replies (round trip, sustained)",
            f"{default.round_trips_lost}, {default.sustained_lost}",
        ],
        [
            "exit codes after SIGTERM",
            ", ".join(f"{k} {v}" for k, v in default.exit_codes.items()),
        ],
    ]
    out += [*table(["figure", "value"], rows), ""]
    out += _transports_table(serving.transports)
    return out


def _transports_table(transports: dict[str, TransportResult]) -> list[str]:
    """The IPC clients side by side: the built-in one (the default) and awsiotsdk."""
    rows = []
    for name, t in transports.items():
        per_cpu = t.requests_per_server_cpu_s
        rows.append(
            [
                name,
                f"{t.server_rss_idle_mib:.1f} / {t.server_rss_after_mib:.1f}",
                str(t.server_threads),
                f"{_ms(t.round_trip_ms.p50)} / {_ms(t.round_trip_ms.p99)}",
                f"{t.requests_per_s:,.0f}",
                "n/a" if per_cpu is None else f"{per_cpu:,.0f}",
            ]
        )
    header = [
        "transport",
        "server RSS idle / after the load, MiB",
        "threads",
        "round trip p50 / p99 ms",
        "requests/s",
        "requests per server CPU-second",
    ]
    pythons = sorted({t.server_python for t in transports.values()})
    note = (
        "The same component and zip with each IPC client (`edgeboost serve --transport`), "
        "started as its recipe starts it: after the recipe's Install, with the bytecode it "
        f"compiled, on {' / '.join(pythons)}."
    )
    return ["### Transports", "", note, "", *table(header, rows), ""]

"""The "Soak" section (in REPORT.md, and SOAK.md of ``edgeboost bench --soak``)."""

from __future__ import annotations

from ..results import Failed, HostFacts, SoakResult
from ..serving import REPLY_TIMEOUT_S
from ..soak import RSS_SAMPLE_S, TREND_WINDOW_S
from .text import table

__all__ = ["soak_page", "soak_section"]


def soak_section(soak: SoakResult | Failed | None) -> list[str]:
    out = ["## Soak", ""]
    if soak is None:
        return [*out, "Not run (`edgeboost bench --soak SECONDS`).", ""]
    if isinstance(soak, Failed):
        return [*out, f"Not measured: {soak.error}", ""]
    rss, rt = soak.rss, soak.round_trip_ms
    out.append(
        "Protocol: three processes as on a device: the local broker, the inference component "
        "run from its unpacked Greengrass zip (`edgeboost serve`, built-in transport) and a "
        f"consumer with the awsiotsdk client; {soak.concurrency} client threads in a closed "
        f"loop for {soak.seconds:.0f} s, one named-feature record per request. Lost: no reply "
        f"within {REPLY_TIMEOUT_S:g} s; duplicate: a second reply with the same id. The "
        f"server's RSS sampled every {RSS_SAMPLE_S:g} s; growth and slope over the run after "
        f"{rss.settled_from_s:.0f} s (medians of its first and last {TREND_WINDOW_S:g} s; "
        "least squares)."
    )
    out.append("")
    slope = rss.slope_mib_per_min
    p50 = "n/a" if rt.p50 is None else f"{rt.p50:.2f}"
    p99 = "n/a" if rt.p99 is None else f"{rt.p99:.2f}"
    rows = [
        ["requests per second", f"{soak.requests_per_s:,.0f}"],
        ["round trip p50 / p99 ms", f"{p50} / {p99}"],
        ["requests / answered", f"{soak.requests:,} / {soak.answered:,}"],
        ["lost / duplicate replies", f"{soak.lost} / {soak.duplicates}"],
        ["server CPU per request", f"{soak.server_cpu_ms_per_request:.3f} ms"],
        [
            "server RSS start / end / max MiB",
            f"{rss.start_mib:.1f} / {rss.end_mib:.1f} / {rss.max_mib:.1f}",
        ],
        ["RSS growth after warm-up", f"{rss.growth_settled_mib:+.2f} MiB"],
        [
            "RSS slope after warm-up",
            "n/a" if slope is None else f"{slope:+.3f} MiB per minute",
        ],
        ["exit codes after SIGTERM", ", ".join(f"{k} {v}" for k, v in soak.exit_codes.items())],
    ]
    return [*out, *table(["figure", "value"], rows), ""]


def soak_page(soak: SoakResult, host: HostFacts, seconds: float) -> str:
    """SOAK.md: the soak section under a title that says where and on what it ran."""
    commit = (host.git_commit or "unknown")[:12]
    lines = [
        "# edgeboost serving soak",
        "",
        f"`edgeboost bench --soak {seconds:g}` on {host.cpu_model}, "
        f"{host.logical_cores} logical cores; commit `{commit}`; the shipped wine model.",
        "",
        *soak_section(soak)[2:],
    ]
    return "\n".join(lines)

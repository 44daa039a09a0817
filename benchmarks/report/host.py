"""What was measured with what: the engines (key, what it is, notes) and the host."""

from __future__ import annotations

from ..results import RunResults
from .text import code, table

__all__ = ["engines_section", "host_section"]


def engines_section(results: RunResults) -> list[str]:
    """Each engine key the report's tables name: what it is, and what to know about it. An
    edgeboost key names its backend and the form of its rows (edgeboost-BACKEND-FORM)."""
    rows = []
    for key, e in results.engines.items():
        note = e.note if not e.unavailable else f"**not run here**: {e.unavailable}"
        rows.append([code(key), e.label, note])
    intro = (
        "An edgeboost engine's key names the backend whose library it loads and how rows "
        "reach it: `edgeboost-BACKEND-FORM`. edgeboost engines must be bit-exact with XGBoost; "
        "the others are peers."
    )
    return ["## Engines", "", intro, "", *table(["engine", "what", "note"], rows), ""]


def host_section(results: RunResults) -> list[str]:
    host = results.host
    out = ["## Host and versions", ""]
    commit = host.git_commit or "unknown"
    dirty = " (with uncommitted changes)" if host.git_dirty else ""
    memory = "" if host.memory_gib is None else f", {host.memory_gib:.0f} GiB"
    out.append(
        f"{host.cpu_model}, {host.logical_cores} logical cores ({host.usable_cores} usable)"
        f"{memory}, {host.os}; commit `{commit[:12]}`{dirty}."
    )
    loads = [p.load_average[0] for p in results.phases if p.load_average]
    if loads:
        out.append(
            f"1-minute load average at the start of each phase: {min(loads):.2f}-{max(loads):.2f} "
            f"on {host.logical_cores} cores (the machine was shared; CPU-time figures are "
            "the ones to compare)."
        )
    out.append("")
    out += table(["software", "version"], [[k, v] for k, v in results.versions.items()])
    out.append("")
    return out

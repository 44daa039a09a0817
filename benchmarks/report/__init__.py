"""REPORT.md from a run's results: one module per section, each with its protocol.

``render_report`` puts the sections in order; ``headline_table`` is the table the CLI prints.
Every figure comes from the run's ``RunResults``; the report states no figure of its own
except the targets' limits (``performance_targets``) and the old design's round trip
(``serving``), each named where it is used.
"""

from __future__ import annotations

from ..results import RunResults
from .backends import backends_section
from .host import engines_section, host_section
from .latency_throughput import latency_throughput_section
from .overhead import overhead_section
from .parity import parity_section
from .serving import serving_section
from .size_compile import size_compile_section
from .soak import soak_section
from .startup_memory import startup_memory_section
from .summary import headline_table, summary_section

__all__ = ["headline_table", "render_report"]


def render_report(results: RunResults) -> str:
    models = ", ".join(
        f"{key} ({m.model.num_tree} trees, depth <= {m.model.max_depth}, "
        f"{m.model.num_feature} features, {m.model.objective})"
        for key, m in results.models.items()
    )
    command = "edgeboost bench" + (" --quick" if results.mode == "quick" else "")
    out = [
        f"# edgeboost benchmark ({results.mode} run)",
        "",
        f"Generated {results.finished_utc} by `{command}` in {results.wall_seconds:.0f} s. "
        f"Models: {models}. Every figure and ratio below comes from this one run.",
        "",
    ]
    skipped = [f"`{key}`" for key, e in results.engines.items() if e.unavailable]
    if skipped:
        out += [f"Engines not run here (see Engines): {', '.join(skipped)}.", ""]
    out += summary_section(results)
    out += engines_section(results)
    out += backends_section(results)
    out += overhead_section(results)
    out += latency_throughput_section(results)
    out += startup_memory_section(results)
    out += size_compile_section(results)
    out += parity_section(results)
    out += serving_section(results)
    if results.soak is not None:
        out += soak_section(results.soak)
    out += host_section(results)
    return "\n".join(out)

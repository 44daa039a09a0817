"""The "Fresh process" section: start-up time and peak memory per engine."""

from __future__ import annotations

from ..results import Failed, RunResults
from .text import code, num, table

__all__ = ["startup_memory_section"]


def startup_memory_section(results: RunResults) -> list[str]:
    out = ["## Fresh process: start-up and peak memory", ""]
    out.append(
        "Protocol: one new process per engine, model and repeat "
        f"({results.config.coldstart_repeats} each, engines interleaved), that imports the "
        "engine, loads the model and predicts one row, then exits. Peak RSS is the VmHWM that "
        "process reads from /proc/self/status just before exiting; the process wall time runs "
        "from spawn to exit. Python processes start from the same interpreter and import "
        "nothing else; the C harness is the whole program (one single-row call). Medians."
    )
    out.append("")
    for model_key, model in results.models.items():
        rows = []
        for key, entry in model.startup.items():
            if isinstance(entry, Failed):
                rows.append([code(key), "error", "", "", "", ""])
                continue

            def ms(seconds: float | None) -> str:
                return num(None if seconds is None else seconds * 1e3)

            rows.append(
                [
                    code(key),
                    f"{entry.peak_rss_mib:.1f}",
                    ms(entry.import_s),
                    ms(entry.load_s),
                    ms(entry.first_predict_s),
                    ms(entry.process_wall_s),
                ]
            )
        header = ["engine", "peak RSS MiB", "import ms", "load ms", "first row ms", "process ms"]
        out += [f"### {model_key}", "", *table(header, rows), ""]
    out += ["![memory and start-up](memory.png)", ""]
    return out

"""Write a run's files: results.json, REPORT.md and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from .report import render_report
from .results import RunResults, to_plain

__all__ = ["write_outputs"]


def write_outputs(results: RunResults, out_dir: Path, *, plots: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "REPORT.md"]
    written[0].write_text(json.dumps(to_plain(results), indent=1) + "\n")
    written[1].write_text(render_report(results) + "\n")
    if plots:
        from .plots import write_plots

        written += write_plots(results, out_dir)
    return written

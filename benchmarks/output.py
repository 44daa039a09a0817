"""Write a run's files: results.json, REPORT.md and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .report import render_report

__all__ = ["write_outputs"]


def _plain(value: Any) -> Any:
    """JSON for what results hold besides plain data: paths, tuples, numpy scalars."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to results.json")


def write_outputs(results: dict[str, Any], out_dir: Path, *, plots: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "REPORT.md"]
    written[0].write_text(json.dumps(results, indent=1, default=_plain) + "\n")
    written[1].write_text(render_report(results) + "\n")
    if plots:
        from .plots import write_plots

        written += write_plots(results, out_dir)
    return written

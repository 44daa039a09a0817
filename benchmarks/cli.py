"""``edgeboost bench`` (and ``python -m edgeboost.benchmarks``): measure, compare, report.

Writes results.json, REPORT.md and PNG plots to the output folder and prints the headline
table. Exits 1 when an edgeboost engine or target is not bit-exact with XGBoost; speed is
never asserted. ``--quick`` is the CI run (under 2.5 minutes); the default is the full run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import BenchConfig

__all__ = ["add_arguments", "main", "run"]


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be positive")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (a top-level parser or a subcommand's)."""
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("bench-results"), help="folder for the results"
    )
    parser.add_argument("--quick", action="store_true", help="the CI run: smaller numbers")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="only a soak of the serving setup for SECONDS: writes soak.json and SOAK.md; "
        "exits 1 if a reply was lost or duplicated",
    )
    parser.add_argument(
        "--engine",
        action="append",
        metavar="KEY",
        help="only this engine (repeatable); see the keys in results.json",
    )
    parser.add_argument(
        "--work", type=Path, help="keep models, bundles and engine files here (default: temporary)"
    )
    shape = parser.add_argument_group("overrides (tests and experiments)")
    shape.add_argument("--batch-sizes", type=_sizes, metavar="N,N,...")
    shape.add_argument("--repeats", type=int, help="rounds per batch size")
    shape.add_argument("--measure-seconds", type=float, help="length of one measurement")
    shape.add_argument("--parity-rows", type=int, help="parity rows per engine on this machine")
    shape.add_argument("--target-parity-rows", type=int, help="parity rows per emulated target")
    shape.add_argument(
        "--one-row-parity-rows", type=int, help="parity rows predicted one per call, per engine"
    )
    shape.add_argument(
        "--target",
        action="append",
        help="targets of the wine model besides this machine's (default: all)",
    )
    shape.add_argument("--coldstart-repeats", type=int, help="fresh processes per engine")
    shape.add_argument("--serving-requests", type=int, help="round trips in the serving test")
    shape.add_argument("--serving-seconds", type=float, help="length of the sustained load")
    shape.add_argument("--no-synthetic", action="store_true", help="the wine model only")
    shape.add_argument("--no-serving", action="store_true", help="skip the serving benchmark")
    shape.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def _config(args: argparse.Namespace) -> BenchConfig:
    from .config import full_config, quick_config

    config = quick_config() if args.quick else full_config()
    overrides = {
        "batch_sizes": args.batch_sizes,
        "measure_seconds": args.measure_seconds,
        "parity_rows": args.parity_rows,
        "target_parity_rows": args.target_parity_rows,
        "one_row_parity_rows": args.one_row_parity_rows,
        "coldstart_repeats": args.coldstart_repeats,
        "serving_round_trips": args.serving_requests,
        "serving_seconds": args.serving_seconds,
        "engines": tuple(args.engine) if args.engine else None,
        "wine_targets": tuple(args.target) if args.target else None,
    }
    if args.repeats is not None:
        overrides.update(repeats=args.repeats, min_repeats=min(args.repeats, config.min_repeats))
    if args.no_synthetic:
        config = replace(config, synthetic=())
    if args.no_serving:
        config = replace(config, serving=False)
    if args.no_plots:
        config = replace(config, plots=False)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given or args.no_synthetic or args.no_serving:
        config = replace(config, mode=f"{config.mode}, with overrides")
    return replace(config, **given)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 when every edgeboost result is bit-exact, else 1."""
    from .output import write_outputs
    from .report import headline_table
    from .runner import run_benchmark

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.soak is not None:
        return _soak_only(args.soak, args.output, args.work, say)
    config = _config(args)
    with tempfile.TemporaryDirectory(prefix="edgeboost-bench-") as scratch:
        work = args.work or Path(scratch)
        results, failures = run_benchmark(config, work, say=say)
    written = write_outputs(results, args.output, plots=config.plots)
    print("\n".join(headline_table(results)))
    print(f"\nwrote {', '.join(str(p) for p in written)} in {results.wall_seconds:.0f} s")
    for failure in failures:
        print(f"edgeboost bench: parity failure: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _soak_only(seconds: float, out_dir: Path, work: Path | None, say: Any) -> int:
    import json

    from edgeboost.compile import compile_bundle

    from .hostinfo import host_facts
    from .models import WINE_MODEL
    from .report.soak import soak_page, soak_section
    from .results import to_plain
    from .soak import measure_soak

    if seconds <= 0:
        raise SystemExit("edgeboost bench: error: --soak needs a positive number of seconds")
    with tempfile.TemporaryDirectory(prefix="edgeboost-soak-") as scratch:
        bundle = (work or Path(scratch)) / "wine-quality"
        compile_bundle(WINE_MODEL, bundle, name="wine-quality", progress=lambda _: None)
        soak = measure_soak(bundle, seconds=seconds, say=say)
    host = host_facts()
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"host": to_plain(host), "soak": to_plain(soak)}
    (out_dir / "soak.json").write_text(json.dumps(document, indent=1) + "\n")
    (out_dir / "SOAK.md").write_text(soak_page(soak, host, seconds))
    print("\n".join(soak_section(soak)))
    return 1 if soak.lost or soak.duplicates else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m edgeboost.benchmarks``."""
    parser = argparse.ArgumentParser(prog="python -m edgeboost.benchmarks", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))

"""PNG figures from a run's results (matplotlib, Agg backend, small files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import RunResults, TimingSummary

__all__ = ["write_plots"]

_DPI = 90


def write_plots(results: RunResults, out_dir: Path) -> list[Path]:
    """Write latency.png, throughput.png, memory.png and size.png; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, draw in (
        ("latency.png", _latency),
        ("throughput.png", _throughput),
        ("memory.png", _memory),
        ("size.png", _size),
    ):
        figure = draw(plt, results)
        path = out_dir / name
        figure.savefig(path, dpi=_DPI, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def _labels(results: RunResults) -> dict[str, str]:
    """Engine key -> the label the plots show: the key itself, which names the backend."""
    return {key: key for key in results.engines}


def _colour(results: RunResults, key: str) -> str:
    """Grey for peers; edgeboost's kernel backend purple, its tl2cgen backend green."""
    engine = results.engines[key]
    if engine.family != "edgeboost":
        return "tab:grey"
    return "tab:purple" if engine.backend == "kernel" else "tab:green"


def _latency(plt: Any, results: RunResults) -> Any:
    models = list(results.models)
    labels = _labels(results)
    keys = [k for k in labels if any(results.models[m].timing_of(k, 1) for m in models)]
    figure, axes = plt.subplots(
        1, len(models), figsize=(4 + 3.5 * len(models), 4.2), squeeze=False, sharey=True
    )
    ys = list(range(len(keys)))
    for axis, model_key in zip(axes[0], models, strict=True):
        singles = [results.models[model_key].timing_of(k, 1) for k in keys]
        p50 = [s.call_us.p50 if s else 0 for s in singles]
        p99 = [s.call_us.p99 if s else 0 for s in singles]
        axis.barh(ys, p50, color=[_colour(results, k) for k in keys])
        spread = [max(b - a, 0) for a, b in zip(p50, p99, strict=True)]
        axis.errorbar(
            p50, ys, xerr=[[0] * len(keys), spread], fmt="none", ecolor="black", capsize=3, lw=1
        )
        axis.set_xscale("log")
        axis.set_xlabel("µs per call: bar p50, whisker p99")
        axis.set_title(f"{model_key}: one row per call", fontsize=10)
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(ys, [labels[k] for k in keys], fontsize=8)
    axes[0][0].invert_yaxis()
    figure.tight_layout()
    return figure


def _throughput(plt: Any, results: RunResults) -> Any:
    models = list(results.models)
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    labels = _labels(results)
    # One colour per engine in every panel (models may be measured on different engines), and
    # one legend for all of them.
    palette = plt.get_cmap("tab20")
    colours = {key: palette(i % palette.N) for i, key in enumerate(labels)}
    handles: dict[str, Any] = {}
    for axis, model_key in zip(axes[0], models, strict=True):
        model = results.models[model_key]
        for key in labels:
            points = sorted(
                (batch, entry)
                for batch, entry in model.timing.get(key, {}).items()
                if isinstance(entry, TimingSummary)
            )
            if not points:
                continue
            xs = [b for b, _ in points]
            engine = results.engines[key]
            style = "-" if engine.family == "edgeboost" else "--"
            (line,) = axis.plot(
                xs,
                [s.rows_per_cpu_s.median for _, s in points],
                style,
                marker="s" if engine.backend == "kernel" else "o",
                markersize=3,
                label=labels[key],
                linewidth=1.2,
                color=colours[key],
            )
            handles.setdefault(key, line)
            axis.fill_between(
                xs,
                [s.rows_per_cpu_s.min for _, s in points],
                [s.rows_per_cpu_s.max for _, s in points],
                color=colours[key],
                alpha=0.15,
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("rows per call")
        axis.set_ylabel("rows per CPU-second")
        axis.set_title(model_key, fontsize=10)
        axis.grid(alpha=0.3)
    ordered = [handles[key] for key in labels if key in handles]
    axes[0][-1].legend(handles=ordered, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.tight_layout()
    return figure


def _memory(plt: Any, results: RunResults) -> Any:
    models = list(results.models)
    labels = _labels(results)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(models)
    keys = [k for k in labels if any(results.models[m].startup_of(k) for m in models)]
    for i, model_key in enumerate(models):
        model = results.models[model_key]
        ys = [y + i * width for y in range(len(keys))]
        rss, start = [], []
        for key in keys:
            entry = model.startup_of(key)
            rss.append(entry.peak_rss_mib if entry else 0)
            if entry is None:
                start.append(0.0)
            elif entry.import_s is None:  # the C harness: its whole life is the start-up
                start.append(1e3 * entry.process_wall_s)
            else:
                start.append(1e3 * (entry.import_s + (entry.load_s or 0)))
        axes[0].barh(ys, rss, height=width, label=model_key)
        axes[1].barh(ys, start, height=width, label=model_key)
    for axis, title in (
        (axes[0], "peak RSS, MiB"),
        (axes[1], "import + load, ms (C harness: the whole process)"),
    ):
        axis.set_yticks(
            [y + width * (len(models) - 1) / 2 for y in range(len(keys))],
            [labels[k] for k in keys],
            fontsize=8,
        )
        axis.invert_yaxis()
        axis.set_xlabel(title)
        axis.grid(axis="x", alpha=0.3)
    axes[1].set_yticks([])
    axes[1].set_xscale("log")
    axes[0].legend(fontsize=8)
    figure.suptitle("fresh process per engine: import, load, predict one row", fontsize=10)
    figure.tight_layout()
    return figure


def _size(plt: Any, results: RunResults) -> Any:
    names, library, zipped = [], [], []
    for model_key, model in results.models.items():
        for backend, build in model.builds.items():
            for triple, target in build.targets.items():
                names.append(f"{model_key}\n{triple.split('-')[0]}\n{backend}")
                library.append(target.library_bytes / 1024)
                zipped.append(target.zip_bytes / 1024)
    figure, axis = plt.subplots(figsize=(max(9.0, 0.75 * len(names)), 3.8))
    xs = list(range(len(names)))
    for offset, values, label, colour in (
        (-0.2, library, "libmodel.so (stripped)", "tab:green"),
        (0.2, zipped, "Greengrass zips (runtime + model)", "tab:blue"),
    ):
        bars = axis.bar([x + offset for x in xs], values, width=0.4, label=label, color=colour)
        axis.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=7)
    axis.set_xticks(xs, names, fontsize=7)
    axis.set_ylabel("KiB")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure

"""What a benchmark run measures, and how much of it: one frozen dataclass and its presets."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BenchConfig", "SyntheticSpec", "full_config", "quick_config"]


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """The larger model, trained in the benchmark from fixed seeds (binary:logistic)."""

    trees: int = 1000
    depth: int = 8
    features: int = 32
    rows: int = 20_000
    seed: int = 42


@dataclass(frozen=True, slots=True)
class BenchConfig:
    mode: str
    # Models: the shipped wine model always; the synthetic one unless None.
    synthetic: SyntheticSpec | None = field(default_factory=SyntheticSpec)
    # Targets compiled per model ("host" or triples); parity under qemu for the foreign ones.
    wine_targets: tuple[str, ...] = ("all",)
    synthetic_targets: tuple[str, ...] = ("host",)
    # edgeboost backends compiled per model (each engine names the backend it loads).
    backends: tuple[str, ...] = ("tl2cgen",)
    # Engines by key (see engines.ENGINES); empty means all.
    engines: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = (1, 100, 10_000, 100_000)
    # Rounds over all engines per batch size: `repeats`, fewer where that would take longer
    # than `batch_budget_seconds`, but never fewer than `min_repeats`.
    repeats: int = 5
    min_repeats: int = 2
    batch_budget_seconds: float = 20.0
    # One measurement calls the engine until about this long (calibrated, at least one call).
    measure_seconds: float = 0.25
    max_calls: int = 20_000
    # Rows compared with XGBoost per engine on the host, and per foreign target under qemu.
    parity_rows: int = 100_000
    target_parity_rows: int = 100_000
    # Fresh-process start-up and memory: processes per engine and model.
    coldstart_repeats: int = 3
    # Serving through the local broker with the real awsiotsdk client.
    serving: bool = True
    serving_round_trips: int = 1000
    serving_seconds: float = 10.0
    serving_concurrency: int = 8
    plots: bool = True


def full_config() -> BenchConfig:
    """The published run: about 10-15 minutes on 2 cores."""
    return BenchConfig(mode="full")


def quick_config() -> BenchConfig:
    """CI, under 2 minutes: the wine model only (every target), smaller numbers."""
    return BenchConfig(
        mode="quick",
        synthetic=None,
        batch_sizes=(1, 100, 10_000, 100_000),
        repeats=3,
        min_repeats=1,
        batch_budget_seconds=8.0,
        measure_seconds=0.03,
        max_calls=2_000,
        parity_rows=20_000,
        target_parity_rows=5_000,
        coldstart_repeats=1,
        serving_round_trips=200,
        serving_seconds=2.0,
    )

"""What a benchmark run measures, and how much of it: frozen dataclasses and their presets."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "LARGE",
    "WINE_SHAPED",
    "BenchConfig",
    "SyntheticSpec",
    "full_config",
    "quick_config",
]


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """A model trained in the benchmark from fixed seeds on one thread (see models.py), and
    what the run does with it."""

    trees: int = 1000
    depth: int = 8
    features: int = 32
    rows: int = 20_000
    seed: int = 42
    # "binary:logistic" or "reg:squarederror".
    objective: str = "binary:logistic"
    # Targets compiled for every backend ("host", "all" or triples); parity under qemu for the
    # foreign ones.
    targets: tuple[str, ...] = ("host",)
    # Which of the run's backends are compiled for this model (empty: all); engines that load
    # another backend are left out on this model.
    backends: tuple[str, ...] = ()
    # Backends compiled for this machine only, whatever `targets` says.
    host_only: tuple[str, ...] = ()
    # Engines measured on this model (empty: all of the run's).
    engines: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"synthetic-{self.trees}x{self.depth}"


# The model the backend targets are set on (performance_targets.py): shaped like the wine
# model (13 features, regression), 400 trees of depth 6, with 5% missing values in training so
# that default directions vary.
WINE_SHAPED = SyntheticSpec(
    trees=400,
    depth=6,
    features=13,
    rows=6_000,
    seed=7,
    objective="reg:squarederror",
    targets=("all",),
)

# The large model, to see how each engine scales. Only the kernel backend is compiled for it:
# TL2cgen's C for 1,000 trees of depth 8 takes about 90 s to compile (and TL2cgen's own
# predictor as long again), and with ten engines its parity and timing took 6.5 minutes, which
# the full run cannot afford next to the other two models; XGBoost, ONNX Runtime, oneDAL and
# the kernel remain.
LARGE = SyntheticSpec(
    trees=1000,
    depth=8,
    features=32,
    rows=20_000,
    seed=42,
    objective="binary:logistic",
    targets=("host",),
    backends=("kernel",),
    engines=(
        "xgboost-inplace",
        "xgboost-inplace-1t",
        "onnxruntime",
        "onedal",
        "edgeboost-kernel-numpy",
        "edgeboost-kernel-c",
    ),
)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    mode: str
    # Models: the shipped wine model always, then these synthetic ones (in order).
    synthetic: tuple[SyntheticSpec, ...] = (WINE_SHAPED, LARGE)
    # Targets the wine model is compiled for ("host" or triples); parity under qemu for the
    # foreign ones. `wine_host_only`: backends compiled for this machine only.
    wine_targets: tuple[str, ...] = ("all",)
    wine_host_only: tuple[str, ...] = ()
    # edgeboost backends compiled per model (each engine names the backend it loads).
    backends: tuple[str, ...] = ("kernel", "tl2cgen")
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
    # Rows compared with XGBoost per engine on the host, and per foreign target under qemu
    # (TL2cgen's C for the 400x6 model ran 1,400 parity rows/s under qemu on a busy 2-core
    # machine; tests/test_cross_targets.py checks 100,000 rows per target in CI).
    parity_rows: int = 100_000
    target_parity_rows: int = 50_000
    # The first rows of those, again with one row per call: an engine may take another code
    # path for small batches (oneDAL does, and sums in another order there).
    one_row_parity_rows: int = 1_000
    # Fresh-process start-up and memory: processes per engine and model.
    coldstart_repeats: int = 3
    # Serving through the local broker with the real awsiotsdk client.
    serving: bool = True
    serving_round_trips: int = 1000
    serving_seconds: float = 10.0
    serving_concurrency: int = 8
    # A soak of the serving setup (0: none; the committed 10-minute one is `--soak 600`).
    soak_seconds: float = 0.0
    plots: bool = True


def full_config() -> BenchConfig:
    """The published run, about 7 minutes on 2 cores: the wine and 400x6 models with both
    backends on every target and every engine, the 1000x8 model with the kernel backend on this
    machine and five engines (see LARGE)."""
    return BenchConfig(mode="full")


# CI tracks the reference model with the engines its figures need, and compiles TL2cgen's C
# for this machine only (the kernel's compiles take seconds: every target, so that CI judges
# "compile of all three targets" too). tests/test_cross_targets.py covers TL2cgen's C on every
# target.
_QUICK_WINE_SHAPED = replace(
    WINE_SHAPED,
    host_only=("tl2cgen",),
    engines=(
        "xgboost-inplace-1t",
        "onedal",
        "edgeboost-kernel-numpy",
        "edgeboost-kernel-c",
        "edgeboost-tl2cgen-numpy",
        "edgeboost-tl2cgen-c",
    ),
)


def quick_config() -> BenchConfig:
    """CI, under 2.5 minutes: the wine model (every engine) and the reference 400x6 model (a
    few engines), both backends, the kernel on every target and TL2cgen's C on this machine;
    smaller numbers, and at most 10,000 rows per call (100,000 took 30 s, most of it in the
    slowest peers; a one-row call costs under 1% of a 10,000-row call for every engine)."""
    return BenchConfig(
        mode="quick",
        synthetic=(_QUICK_WINE_SHAPED,),
        wine_host_only=("tl2cgen",),
        batch_sizes=(1, 100, 10_000),
        repeats=3,
        min_repeats=1,
        batch_budget_seconds=8.0,
        measure_seconds=0.03,
        max_calls=2_000,
        parity_rows=20_000,
        target_parity_rows=5_000,
        one_row_parity_rows=300,
        coldstart_repeats=1,
        serving_round_trips=200,
        serving_seconds=2.0,
        soak_seconds=60.0,
    )

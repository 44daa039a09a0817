"""What a benchmark run measured, as typed records; results.json is their JSON form.

The run (``runner.py``) fills a ``RunResults``; the report, the plots and the CLI's table
read it. ``to_plain`` turns it into JSON data: a dataclass becomes an object of its fields
(fields marked ``NOT_WRITTEN`` are left out: paths into the run's scratch folder), a tuple a
list, a dict key a string. A record that could not be measured is a ``Failed`` (``{"error":
...}`` in JSON) where the figures would be. Nothing here measures or judges.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import BenchConfig
from .performance_targets import PerformanceTarget

__all__ = [
    "NOT_WRITTEN",
    "RESULTS_VERSION",
    "BackendBuild",
    "BackendComparison",
    "BackendEngines",
    "BackendFigures",
    "EngineInfo",
    "Failed",
    "HostFacts",
    "ModelComparison",
    "ModelFacts",
    "ModelResults",
    "OneRowCall",
    "OneRowOverhead",
    "ParityNotChecked",
    "ParityReport",
    "PeerFigures",
    "Percentiles",
    "Phase",
    "RoundTripMs",
    "RssTrend",
    "RunResults",
    "ServingResult",
    "SoakResult",
    "Spread",
    "StartupSummary",
    "TargetBuild",
    "TargetVerdict",
    "TimingSummary",
    "TransportResult",
    "to_plain",
]

# 3: typed records; engine keys name their backend; oneDAL; one-row overhead; serving's
# transports only under "transports".
RESULTS_VERSION = 3
# Field metadata: the field is for this process only, not written to results.json.
NOT_WRITTEN = {"written": False}


@dataclass(frozen=True, slots=True)
class Failed:
    """What the run tried and could not measure (a peer that fails is reported, not fatal)."""

    error: str


# --- speed ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spread:
    """One figure across rounds."""

    median: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Per-call latencies in µs, over every call of every round."""

    p50: float
    p99: float
    min: float
    max: float
    calls: int


@dataclass(frozen=True, slots=True)
class TimingSummary:
    """One engine at one batch size (timing.py)."""

    batch: int
    rounds: int
    calls_per_round: int
    rows_per_s: Spread
    rows_per_cpu_s: Spread
    call_us: Percentiles
    round_p50_us: Spread  # each round's p50: the best round is what quiet co-tenants allow
    cpu_per_wall: float  # CPU-seconds of the process per wall second (threads in use)


@dataclass(frozen=True, slots=True)
class OneRowCall:
    """One way of making a one-row call (overhead.py), in µs."""

    way: str
    label: str
    p50_us: float  # over every call of every round
    round_p50_us: Spread
    overhead_us: float | None  # p50 minus the C call's p50 (None for C and the no-op)
    calls_per_round: int


@dataclass(frozen=True, slots=True)
class OneRowOverhead:
    """What Python adds to a one-row call, against the same library called from C."""

    backend: str
    rounds: int
    distinct_rows: int
    calls: dict[str, OneRowCall]  # way -> figures; "c" is the baseline
    target: PerformanceTarget
    met: dict[str, bool | None]  # the judged ways


# --- parity --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParityReport:
    """An engine's or a target's outputs against XGBoost's (parity.py)."""

    rows: int
    exact: bool  # margins bit-identical and values within 1 ULP
    value_mismatched_rows: int
    max_abs_value_diff: float
    max_ulp_value: int
    # None where the engine gives no margins (its values are compared).
    margin_mismatched_rows: int | None = None
    max_abs_margin_diff: float | None = None
    max_ulp_margin: int | None = None
    note: str = ""
    emulated: bool = False  # a foreign target, run under qemu-user
    # The first rows again, one row per call (engines only; None where not checked).
    one_row_calls: ParityReport | None = None


@dataclass(frozen=True, slots=True)
class ParityNotChecked:
    """No comparison: the engine raised (``failed``), or the target could not run here."""

    rows: int
    reason: str
    failed: bool


# --- builds, start-up ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetBuild:
    """One model compiled for one target by one backend, as ``edgeboost compile`` does."""

    triple: str
    library_bytes: int
    library_stripped: bool
    bundle_bytes: int
    zip_bytes: int  # runtime zip + model zip for this platform
    compile_wall_seconds: float
    compiler_seconds: float
    compiler: str
    flags: tuple[str, ...]
    bundle: Path = field(metadata=NOT_WRITTEN)


@dataclass(slots=True)
class BackendBuild:
    """The bundles of one model and one backend, per target (the host's first)."""

    model: str
    backend: str
    host: str
    targets: dict[str, TargetBuild] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # triple -> why

    @property
    def host_bundle(self) -> Path:
        return self.targets[self.host].bundle


@dataclass(frozen=True, slots=True)
class StartupSummary:
    """Fresh processes of one engine (memory.py), medians."""

    processes: int
    process_wall_s: float
    import_s: float | None  # None for the C harness: its whole life is the start-up
    load_s: float | None
    first_predict_s: float | None
    peak_rss_mib: float
    peak_rss_mib_max: float
    before_import_mib: float | None


# --- serving -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundTripMs:
    p50: float | None
    p90: float | None
    p99: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class TransportResult:
    """The inference component with one IPC client (serving.py)."""

    model: str
    transport: str
    request: str
    round_trip_ms: RoundTripMs
    round_trips: int
    round_trips_lost: int
    concurrency: int
    sustained_seconds: float
    requests_per_s: float
    sustained_requests: int
    sustained_lost: int
    server_cpu_ms_per_request: float
    requests_per_server_cpu_s: float | None
    server_rss_under_load_median_mib: float | None
    server_rss_under_load_max_mib: float | None
    server_rss_idle_mib: float
    server_rss_after_mib: float
    server_peak_rss_mib: float
    server_threads: int
    exit_codes: dict[str, int]
    server_python: str  # the interpreter the server ran on, as serving.DevicePython says


@dataclass(frozen=True, slots=True)
class ServingResult:
    default_transport: str
    transports: dict[str, TransportResult]
    old_design_round_trip_ms: tuple[float, float]  # the Lambda-in-Docker component's

    @property
    def default(self) -> TransportResult:
        return self.transports[self.default_transport]


@dataclass(frozen=True, slots=True)
class RssTrend:
    """The server's RSS over a soak: where it started and ended, and its trend after warm-up."""

    start_mib: float
    end_mib: float
    max_mib: float
    settled_from_s: float
    slope_mib_per_min: float | None
    growth_settled_mib: float
    samples: int


@dataclass(frozen=True, slots=True)
class SoakResult:
    seconds: float
    concurrency: int
    requests: int
    answered: int
    lost: int
    duplicates: int
    requests_per_s: float
    round_trip_ms: RoundTripMs
    server_cpu_ms_per_request: float
    rss: RssTrend
    exit_codes: dict[str, int]


# --- the two backends side by side (backend_comparison.py) ---------------------------------


@dataclass(frozen=True, slots=True)
class BackendEngines:
    """The engines a backend's figures come from."""

    python: str  # the runtime with numpy rows
    c: str  # the C harness


@dataclass(frozen=True, slots=True)
class BackendFigures:
    """One backend on one model; None where the run did not measure the figure."""

    python_p50_us: float | None
    python_p50_us_best_round: float | None
    python_rows_per_cpu_s: float | None
    python_rows_per_cpu_s_best_round: float | None
    python_cpu_per_wall: float | None
    c_p50_us: float | None
    c_rows_per_cpu_s: float | None
    c_cpu_per_wall: float | None
    compile_wall_s: dict[str, float]  # per target
    compiler_s: dict[str, float]
    compile_all_targets_s: float | None  # added up over every target; None unless all built
    compiler_all_targets_s: float | None
    library_bytes: int | None  # this machine's target
    library_bytes_per_target: dict[str, int]
    host_target: str | None

    def figure(self, name: str) -> float | None:
        """A figure by its field name (the performance targets and ratios name theirs)."""
        value = getattr(self, name, None)
        return value if value is None else float(value)


@dataclass(frozen=True, slots=True)
class PeerFigures:
    engine: str
    python_p50_us: float | None
    python_rows_per_cpu_s: float | None
    python_cpu_per_wall: float | None

    def figure(self, name: str) -> float | None:
        value = getattr(self, name, None)
        return value if value is None else float(value)


@dataclass(frozen=True, slots=True)
class ModelComparison:
    backends: dict[str, BackendFigures]
    peers: dict[str, PeerFigures]  # "xgboost", "tl2cgen_predictor"
    # "kernel/tl2cgen", "kernel/xgboost", "kernel/tl2cgen_predictor" -> figure -> ratio
    ratios: dict[str, dict[str, float]]


@dataclass(frozen=True, slots=True)
class TargetVerdict:
    """A performance target judged on its model, per backend."""

    target: PerformanceTarget
    measured: dict[str, float | None]
    best_round: dict[str, float | None]  # shown beside the verdict, never judged
    met: dict[str, bool | None]  # None: not measured


@dataclass(frozen=True, slots=True)
class BackendComparison:
    largest_batch: int
    engines: dict[str, BackendEngines]  # backend -> its engines
    peers: dict[str, str]  # peer name -> engine key
    all_targets: tuple[str, ...]
    models: dict[str, ModelComparison]
    targets: tuple[TargetVerdict, ...]


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelFacts:
    key: str
    file: str
    objective: str
    num_tree: int
    num_node: int
    num_feature: int
    max_depth: int
    train_seconds: float | None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    key: str
    label: str
    family: str  # "edgeboost" (must be bit-exact) or "peer"
    backend: str | None
    form: str | None
    note: str
    unavailable: str | None  # why it cannot run here


@dataclass(frozen=True, slots=True)
class HostFacts:
    cpu_model: str
    logical_cores: int | None
    usable_cores: int | None
    memory_gib: float | None
    machine: str
    kernel: str
    os: str
    git_commit: str | None
    git_dirty: bool | None
    load_average_at_start: tuple[float, float, float] | None


@dataclass(frozen=True, slots=True)
class Phase:
    phase: str
    at_s: float
    load_average: tuple[float, float, float] | None


@dataclass(slots=True)
class ModelResults:
    model: ModelFacts
    engines: list[str]  # measured on this model
    engines_left_out: dict[str, str]  # key -> why
    builds: dict[str, BackendBuild] = field(default_factory=dict)
    engine_builds: dict[str, float | Failed] = field(default_factory=dict)  # seconds
    parity: dict[str, ParityReport | ParityNotChecked] = field(default_factory=dict)
    # backend -> target -> report (this machine's target is the C engine's row)
    target_parity: dict[str, dict[str, ParityReport | ParityNotChecked]] = field(
        default_factory=dict
    )
    timing: dict[str, dict[int, TimingSummary | Failed]] = field(default_factory=dict)
    startup: dict[str, StartupSummary | Failed] = field(default_factory=dict)
    overhead: OneRowOverhead | Failed | None = None

    def timing_of(self, engine: str, batch: int) -> TimingSummary | None:
        """The engine's summary at ``batch`` rows per call, or None (not run, or failed)."""
        entry = self.timing.get(engine, {}).get(batch)
        return entry if isinstance(entry, TimingSummary) else None

    def startup_of(self, engine: str) -> StartupSummary | None:
        entry = self.startup.get(engine)
        return entry if isinstance(entry, StartupSummary) else None


@dataclass(slots=True)
class RunResults:
    mode: str
    config: BenchConfig
    host: HostFacts
    versions: dict[str, str]
    engines: dict[str, EngineInfo]
    models: dict[str, ModelResults] = field(default_factory=dict)
    serving: ServingResult | Failed | None = None
    soak: SoakResult | Failed | None = None
    backends: BackendComparison | None = None
    phases: list[Phase] = field(default_factory=list)
    wall_seconds: float = 0.0
    finished_utc: str = ""
    parity_failures: list[str] = field(default_factory=list)
    results_version: int = RESULTS_VERSION

    @property
    def largest_batch(self) -> int:
        return max(self.config.batch_sizes)

    def label(self, key: str) -> str:
        return self.engines[key].label

    def peers(self) -> list[str]:
        """The engines that are not edgeboost's, in table order."""
        return [k for k, e in self.engines.items() if e.family != "edgeboost"]


def to_plain(value: Any) -> Any:
    """JSON data for ``value``: records, dicts, sequences, paths, numpy scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("written", True)
        }
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to results.json")

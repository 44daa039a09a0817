"""A whole benchmark run: models, builds, engines, then each measurement, into ``RunResults``.

``run_benchmark`` returns the results (what results.json holds) and the parity failures of
edgeboost engines and targets; it measures and never judges speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .backend_comparison import compare_backends
from .build import build_model
from .config import BenchConfig
from .engines import Artifacts, EdgeboostC, Engine, Session, select_engines
from .hostinfo import host_facts, load_average, versions
from .memory import measure_coldstart
from .models import WINE_MODEL, ModelCase, load_case, timing_rows, train_synthetic
from .overhead import measure_overhead
from .parity import Reference, engine_parity, target_parity
from .results import (
    BackendBuild,
    EngineInfo,
    Failed,
    ModelResults,
    ParityNotChecked,
    ParityReport,
    Phase,
    RunResults,
)
from .timing import run_timing

__all__ = ["run_benchmark"]


class _Phases:
    """Wall time and load average at the start of every phase."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.log: list[Phase] = []
        self._started = time.perf_counter()

    def start(self, name: str) -> None:
        now = time.perf_counter() - self._started
        self.log.append(Phase(phase=name, at_s=round(now, 1), load_average=load_average()))
        self.say(f"[{now:6.1f}s] {name}")


def run_benchmark(
    config: BenchConfig, work: Path, *, say: Callable[[str], None] = print
) -> tuple[RunResults, list[str]]:
    from edgeboost.compile import DEFAULT_BACKEND

    started = time.perf_counter()
    phases = _Phases(say)
    phases.start("host facts")
    engines = select_engines(config.engines)
    results = RunResults(
        mode=config.mode,
        config=config,
        host=host_facts(),
        versions=versions(d for e in engines for d in e.distributions),
        engines={e.key: _engine_info(e) for e in engines},
    )
    failures: list[str] = []
    usable = [e for e in engines if results.engines[e.key].unavailable is None]
    for engine in engines:
        reason = results.engines[engine.key].unavailable
        if reason:
            say(f"  {engine.key}: skipped ({reason})")
            if engine.family == "edgeboost":
                failures.append(f"{engine.key} cannot run: {reason}")

    # Every backend asked for, and every backend a selected engine loads.
    backends = list(dict.fromkeys([*config.backends, *(e.backend for e in usable if e.backend)]))
    phases.start("models")
    wine = load_case("wine-quality", WINE_MODEL)
    plans = [_Plan(wine, config.wine_targets, tuple(backends), config.wine_host_only)]
    for spec in config.synthetic:
        phases.say(f"  training {spec.key} ({spec.objective}, {spec.features} features)")
        plans.append(
            _Plan(
                train_synthetic(spec, work / "models"),
                spec.targets,
                tuple(b for b in backends if not spec.backends or b in spec.backends),
                spec.host_only,
                spec.engines,
            )
        )

    serving_bundle: Path | None = None
    for plan in plans:
        case = plan.case
        engines_here, left_out = plan.engines_from(usable)
        model_results = ModelResults(
            model=case.facts(),
            engines=[e.key for e in engines_here],
            engines_left_out=left_out,
        )
        results.models[case.key] = model_results
        phases.start(f"{case.key}: compile per target")
        model_results.builds = {
            backend: build_model(case, plan.targets_of(backend), work, backend=backend, say=say)
            for backend in plan.backends
        }
        if case.key == wine.key and plan.backends:
            # The serving setup runs what a device gets: the default backend's bundle.
            served = DEFAULT_BACKEND if DEFAULT_BACKEND in plan.backends else plan.backends[0]
            serving_bundle = model_results.builds[served].host_bundle
        failures += _measure_model(config, case, engines_here, work, model_results, phases)

    if config.serving and serving_bundle is not None:
        phases.start("serving through the local broker")
        from .serving import measure_serving

        try:
            results.serving = measure_serving(
                serving_bundle,
                round_trips=config.serving_round_trips,
                seconds=config.serving_seconds,
                concurrency=config.serving_concurrency,
                say=say,
            )
        except Exception as exc:  # awsiotsdk missing, a process failing: reported, not fatal
            results.serving = Failed(f"{type(exc).__name__}: {exc}")
            say(f"  serving skipped: {exc}")
    if config.soak_seconds > 0 and serving_bundle is not None:
        phases.start(f"soak: {config.soak_seconds:g} s of steady load")
        from .soak import measure_soak

        try:
            results.soak = measure_soak(serving_bundle, seconds=config.soak_seconds, say=say)
        except Exception as exc:
            results.soak = Failed(f"{type(exc).__name__}: {exc}")
            say(f"  soak skipped: {exc}")
    phases.start("done")
    results.backends = compare_backends(results)
    results.phases = phases.log
    results.wall_seconds = round(time.perf_counter() - started, 1)
    results.finished_utc = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results.parity_failures = failures
    return results, failures


@dataclass(frozen=True, slots=True)
class _Plan:
    """One model of the run: what is compiled for it and which engines it is measured on."""

    case: ModelCase
    targets: tuple[str, ...]
    backends: tuple[str, ...]
    host_only: tuple[str, ...] = ()  # backends compiled for this machine only
    engines: tuple[str, ...] = ()  # empty: every engine of the run

    def targets_of(self, backend: str) -> tuple[str, ...]:
        return ("host",) if backend in self.host_only else self.targets

    def engines_from(self, usable: list[Engine]) -> tuple[list[Engine], dict[str, str]]:
        """The engines measured on this model, and why each other one is left out."""
        here: list[Engine] = []
        left_out: dict[str, str] = {}
        for engine in usable:
            if self.engines and engine.key not in self.engines:
                left_out[engine.key] = "not configured for this model"
            elif engine.backend is not None and engine.backend not in self.backends:
                left_out[engine.key] = f"the {engine.backend} backend is not compiled for it"
            else:
                here.append(engine)
        return here, left_out


def _exact(report: ParityReport | ParityNotChecked) -> bool:
    """Bit-exact in one call for all rows and, where checked, in one call per row."""
    if not isinstance(report, ParityReport) or not report.exact:
        return False
    return report.one_row_calls is None or report.one_row_calls.exact


def _engine_info(engine: Engine) -> EngineInfo:
    return EngineInfo(
        key=engine.key,
        label=engine.label,
        family=engine.family,
        backend=engine.backend,
        form=engine.form,
        note=engine.note,
        unavailable=engine.unavailable(),
    )


def _measure_model(
    config: BenchConfig,
    case: ModelCase,
    engines: list[Engine],
    work: Path,
    out: ModelResults,
    phases: _Phases,
) -> list[str]:
    from edgeboost.compile import DEFAULT_BACKEND

    failures: list[str] = []
    builds: dict[str, BackendBuild] = out.builds
    artifacts = Artifacts(
        model=case.key,
        model_path=str(case.model_path),
        feature_names=case.feature_names,
        bundles={b: str(build.host_bundle) for b, build in builds.items()},
        work=str(work),
    )
    phases.start(f"{case.key}: engine builds")
    ready: list[Engine] = []
    for engine in engines:
        begun = time.perf_counter()
        try:
            artifacts = artifacts.with_files(engine.build(artifacts))
        except Exception as exc:
            out.engine_builds[engine.key] = Failed(f"{type(exc).__name__}: {exc}")
            phases.say(f"  {engine.key}: build failed ({exc})")
            if engine.family == "edgeboost":
                failures.append(f"{case.key}: {engine.key} build failed: {exc}")
            continue
        seconds = time.perf_counter() - begun
        if seconds > 0.05:
            out.engine_builds[engine.key] = round(seconds, 2)
        ready.append(engine)

    sessions: dict[str, Session] = {}
    try:
        for engine in ready:
            sessions[engine.key] = engine.open(artifacts)

        phases.start(
            f"{case.key}: parity, {config.parity_rows:,} rows per engine "
            f"({config.one_row_parity_rows:,} of them one per call)"
        )
        reference = Reference(str(case.model_path), config.parity_rows)
        for engine in ready:
            report = engine_parity(
                engine, sessions[engine.key], reference, config.one_row_parity_rows
            )
            out.parity[engine.key] = report
            if engine.family == "edgeboost" and not _exact(report):
                failures.append(f"{case.key}: {engine.key} is not bit-exact: {report}")
        # The C engine runs this machine's library through the parity driver already.
        from_c = {e.backend for e in ready if isinstance(e, EdgeboostC)}
        for backend, build in builds.items():
            per_target = target_parity(
                build,
                reference,
                config.target_parity_rows,
                skip_host=backend in from_c,
                say=phases.say,
            )
            out.target_parity[backend] = per_target
            for triple, target_report in per_target.items():
                if isinstance(target_report, ParityReport) and not target_report.exact:
                    failures.append(
                        f"{case.key}: {triple} ({backend}) is not bit-exact: {target_report}"
                    )
                elif isinstance(target_report, ParityNotChecked) and target_report.failed:
                    failures.append(f"{case.key}: {triple} ({backend}): {target_report.reason}")
        del reference

        phases.start(f"{case.key}: latency and throughput")
        rows = timing_rows(case, max(config.batch_sizes))
        out.timing = run_timing(sessions, rows, config, say=phases.say)
    finally:
        for session in sessions.values():
            session.close()
        sessions.clear()

    if DEFAULT_BACKEND in builds:
        phases.start(f"{case.key}: one-row overhead of Python ({DEFAULT_BACKEND} backend)")
        try:
            out.overhead = measure_overhead(
                case,
                builds[DEFAULT_BACKEND].host_bundle,
                DEFAULT_BACKEND,
                config,
                work,
                say=phases.say,
            )
        except Exception as exc:  # no C compiler, say: reported, not fatal
            out.overhead = Failed(f"{type(exc).__name__}: {exc}")
            phases.say(f"  one-row overhead not measured: {exc}")

    phases.start(f"{case.key}: fresh-process start-up and memory")
    out.startup = measure_coldstart(ready, artifacts, config.coldstart_repeats, say=phases.say)
    return failures

"""Build a bundle: model file -> C -> one library per target -> manifest.json + SHA256SUMS.

The bundle is assembled in a temporary folder next to the destination and moved into place
only when complete and verified, so a failed build never leaves a half-written bundle.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata, resources
from pathlib import Path

from edgeboost.runtime.integrity import CHECKSUMS_NAME, format_checksums, sha256_file
from edgeboost.runtime.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    ModelSource,
    TargetLibrary,
)
from edgeboost.runtime.model import Model
from edgeboost.runtime.records import replace
from edgeboost.runtime.targets import TARGETS, host_target

from .errors import MissingToolError, ParityError, ToolchainError
from .kernel_backend import KERNEL_OPTIMIZATION, KERNEL_SOURCE, write_kernel_sources
from .parity import compare_outputs, parity_rows, reference_predictions, xgboost_label
from .source import SourceModel, load_source_model
from .tl2cgen_backend import GeneratedSources, generate_tl2cgen_sources
from .toolchain import DEFAULT_OPTIMIZATION, BuiltLibrary, LibraryJob, build_libraries

__all__ = ["ALL_TARGETS", "BACKENDS", "DEFAULT_BACKEND", "compile_bundle", "resolve_targets"]

_log = logging.getLogger(__name__)
ALL_TARGETS = tuple(TARGETS)
# Backend -> (writes the model's C into a folder, the native/ file compiled with it, -O level).
_BACKENDS: dict[str, tuple[Callable[[SourceModel, Path], GeneratedSources], str, str]] = {
    "kernel": (write_kernel_sources, KERNEL_SOURCE, KERNEL_OPTIMIZATION),
    "tl2cgen": (generate_tl2cgen_sources, "tl2cgen_adapter.c", DEFAULT_OPTIMIZATION),
}
BACKENDS = tuple(_BACKENDS)
DEFAULT_BACKEND = "kernel"
_VERIFY_ROWS = 4096
_HOW_TO_VERIFY = (
    "apt-get install qemu-user-static (and the target's libc6-dev-*-cross), then run "
    "edgeboost compile again"
)
# native/ code every library has, whatever the backend (status messages, ABI version).
COMMON_SOURCE = "edgeboost_common.c"


def resolve_targets(names: Sequence[str]) -> tuple[str, ...]:
    """Expand "host" and "all"; refuse unknown names with the list of known ones."""
    triples: list[str] = []
    for name in names:
        expanded = {"all": ALL_TARGETS, "host": (host_target(),)}.get(name, (name,))
        for triple in expanded:
            if triple not in TARGETS:
                raise ToolchainError(
                    f"unknown target {triple!r}; known: all, host, {', '.join(TARGETS)}"
                )
            if triple not in triples:
                triples.append(triple)
    return tuple(triples)


def compile_bundle(
    model_path: str | Path,
    out_dir: str | Path,
    *,
    targets: Sequence[str] = ("host",),
    name: str | None = None,
    jobs: int | None = None,
    verify: bool = True,
    keep_sources: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    backend: str = DEFAULT_BACKEND,
    trees: str = "all",
) -> Manifest:
    """Compile ``model_path`` into a bundle at ``out_dir`` and return its manifest.

    ``backend`` is "kernel" (the default: the forest as tables walked by
    native/forest_kernel.c) or "tl2cgen" (nested if-else C, the reference). ``verify`` checks
    the host library (when built) against XGBoost on 4,096 probing rows and refuses to write
    the bundle unless every margin is bit-identical. ``trees`` is "all" (every round, as
    Booster.predict) or "best" (up to early stopping's best_iteration, as the scikit-learn
    wrapper predicts); manifest.json records it under "trees", and XGBoost is asked with the
    same iteration_range.
    """
    say = progress or _log.info
    if backend not in _BACKENDS:
        raise ToolchainError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    generate, adapter_name, optimization = _BACKENDS[backend]
    out_dir = Path(out_dir)
    triples = resolve_targets(targets)
    source = load_source_model(model_path, trees=trees)
    say(
        f"loaded {source.path.name}: {source.num_tree} trees, {source.num_feature} features, "
        f"objective {source.objective}"
    )
    _check_destination(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be read by others
    try:
        with tempfile.TemporaryDirectory(prefix="edgeboost-build-") as scratch:
            work = Path(keep_sources) if keep_sources else Path(scratch)
            generated = generate(source, work / "c")
            native_dir = Path(str(resources.files("edgeboost.native")))
            adapter = native_dir / adapter_name
            library_jobs = [
                LibraryJob(
                    triple=triple,
                    sources=(*generated.c_files, adapter, native_dir / COMMON_SOURCE),
                    include_dirs=(generated.directory, native_dir),
                    work_dir=work / "obj" / triple,
                    optimization=optimization,
                )
                for triple in triples
            ]
            say(f"compiling {len(generated.c_files)} units for {', '.join(triples)}")
            built = build_libraries(library_jobs, workers=jobs or os.cpu_count() or 1, progress=say)
            libraries = {t: _install_library(staging, built[t]) for t in triples}
        manifest = _manifest(source, name, libraries, backend)
        _write_manifest(staging, manifest, source)
        if verify:
            manifest = _verify(staging, manifest, source, say)
            _write_manifest(staging, manifest, source)
        _replace(out_dir, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for triple, lib in manifest.targets.items():
        say(f"{triple}: {lib.file} ({lib.size:,} bytes, {lib.build_seconds:.1f} compiler-s)")
    return manifest


def _install_library(staging: Path, built: BuiltLibrary) -> TargetLibrary:
    relative = f"lib/{built.triple}/libmodel.so"
    destination = staging / relative
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.path, destination)
    return TargetLibrary(
        file=relative,
        sha256=sha256_file(destination),
        size=destination.stat().st_size,
        compiler=built.compiler,
        compiler_version=built.compiler_version,
        flags=built.flags,
        build_seconds=built.build_seconds,
    )


def _manifest(
    source: SourceModel, name: str | None, libraries: dict[str, TargetLibrary], backend: str
) -> Manifest:
    return Manifest(
        schema_version=SCHEMA_VERSION,
        model=ModelSource(
            name=name or source.path.stem,
            file=source.path.name,
            sha256=source.sha256,
            format=source.format,
        ),
        tools=_tool_versions(backend),
        backend=backend,
        abi_version=1,
        objective=source.objective,
        postprocessor=source.postprocessor,
        num_feature=source.num_feature,
        feature_names=source.feature_names,
        feature_types=source.feature_types,
        num_target=source.num_target,
        num_class=source.num_class,
        num_output=source.num_output,
        base_score=source.base_score,
        threshold_type="float32",
        num_tree=source.num_tree,
        targets=libraries,
    )


def _tool_versions(backend: str) -> dict[str, str]:
    """Versions of what shaped the library: tl2cgen only when it generated the code."""
    versions = {"python": platform.python_version()}
    packages = ["edgeboost", "xgboost-cpu", "xgboost", "treelite"]
    if backend == "tl2cgen":
        packages.append("tl2cgen")
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _write_manifest(staging: Path, manifest: Manifest, source: SourceModel) -> None:
    # "trees" (which rounds were compiled) is for people and tools: the runtime has no use
    # for it and its Manifest ignores it.
    doc = {**json.loads(manifest.to_json()), "trees": source.trees_record()}
    (staging / MANIFEST_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    digests = {MANIFEST_NAME: sha256_file(staging / MANIFEST_NAME)}
    digests.update({lib.file: lib.sha256 for lib in manifest.targets.values()})
    (staging / CHECKSUMS_NAME).write_text(format_checksums(digests))


def _verify(
    staging: Path, manifest: Manifest, source: SourceModel, say: Callable[[str], None]
) -> Manifest:
    """Check every library against XGBoost on the same probing rows; refuse the bundle on any
    difference. The host's is loaded by the runtime; another target's runs under qemu-user
    (native/parity_driver.c). Without qemu (or the target's C library) that target's parity
    says "not verified", why, and how to verify."""
    rows = parity_rows(source, _VERIFY_ROWS, seed=0)
    margin, value = reference_predictions(
        source.booster(), rows, iteration_range=source.iteration_range
    )
    reference = {"margin": margin, "value": value}
    label = xgboost_label(source.iteration_range, source.num_rounds)
    # Imported here: `python -m edgeboost.compile.emulation` would otherwise find it imported
    # by the package before it runs (runpy's warning), and the host target never needs it.
    from . import emulation

    targets = dict(manifest.targets)
    for triple, library in targets.items():
        if not emulation.needs_emulation(triple):
            model = Model.load(staging, target=triple)
            ours = {"margin": model.predict(rows, margin=True), "value": model.predict(rows)}
            how = "in process, edgeboost.runtime"
        else:
            try:
                outputs = emulation.run_library(
                    triple, staging / library.file, rows, value_width=source.value_width
                )
            except MissingToolError as exc:
                say(f"{triple}: not verified: {exc}; then compile again to verify it")
                parity = {"verified": False, "reason": str(exc), "to_verify": _HOW_TO_VERIFY}
                targets[triple] = replace(library, parity=parity)
                continue
            ours = dict(zip(("margin", "value"), outputs, strict=True))
            how = "qemu-user, native/parity_driver.c"
        report = compare_outputs(ours, reference, label=label)
        if not report.exact:
            raise ParityError(
                f"{triple} library disagrees with XGBoost on {report.margin_mismatched_rows} of "
                f"{report.rows} rows (max margin difference "
                f"{report.max_abs_margin_difference:.3g}, max {report.max_ulp_transformed} ULP "
                "after the transform); bundle not written"
            )
        say(f"verified {triple} against {report.reference}: {report.rows} rows, margins "
            f"bit-identical ({how})")  # fmt: skip
        targets[triple] = replace(
            library, parity={**report.as_dict(), "verified": True, "method": how}
        )
    return replace(manifest, targets=targets)


def _check_destination(out_dir: Path) -> None:
    """Only ever replace an earlier bundle or an empty folder, never someone's files."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).exists():
        raise ToolchainError(f"{out_dir} exists and is not a bundle; refusing to overwrite it")


def _replace(out_dir: Path, staging: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
        staging.rename(out_dir)
        shutil.rmtree(old)
    else:
        staging.rename(out_dir)

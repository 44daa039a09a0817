"""Compile each model once per target and measure what ships: time, library, bundle and zip.

Each target is compiled on its own (``compile_bundle(..., targets=[triple])``), so its wall
time is that of ``edgeboost compile --target TRIPLE`` (C generation, compilers, and for the
host target its parity check against XGBoost), and its bundle and Greengrass zip are exactly what
that platform's devices receive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .models import ModelCase
from .results import BackendBuild, TargetBuild

__all__ = ["build_model"]


def build_model(
    case: ModelCase,
    targets: tuple[str, ...],
    work: Path,
    *,
    backend: str,
    say: Callable[[str], None] = print,
) -> BackendBuild:
    """Compile ``case`` for each target (the host one always, first). A missing cross
    toolchain skips that target with the reason; any other failure is raised."""
    from edgeboost.compile import ToolchainError, resolve_targets
    from edgeboost.runtime.targets import host_target

    host = host_target()
    triples = resolve_targets(("host", *targets))
    result = BackendBuild(model=case.key, backend=backend, host=host)
    for triple in triples:
        try:
            result.targets[triple] = _build_target(case, triple, work, backend)
        except ToolchainError as exc:
            # Only a missing cross toolchain skips a target (its message says what to install).
            if triple == host or "apt-get install" not in str(exc):
                raise
            result.skipped[triple] = str(exc).splitlines()[0]
            say(f"  {case.key} {triple} ({backend}): skipped ({result.skipped[triple]})")
            continue
        built = result.targets[triple]
        say(
            f"  {case.key} {triple} ({backend}): {built.library_bytes:,} B library, "
            f"{built.compile_wall_seconds:.1f} s wall, {built.compiler_seconds:.1f} compiler-s"
        )
    return result


def _build_target(case: ModelCase, triple: str, work: Path, backend: str) -> TargetBuild:
    from edgeboost.compile import compile_bundle
    from edgeboost.compile.toolchain import LINK_FLAGS

    bundle = work / "bundles" / backend / case.key / triple
    started = time.perf_counter()
    manifest = compile_bundle(
        case.model_path,
        bundle,
        targets=[triple],
        name=case.key,
        progress=lambda _line: None,
        backend=backend,
    )
    wall = time.perf_counter() - started
    library = manifest.targets[triple]
    return TargetBuild(
        triple=triple,
        library_bytes=library.size,
        library_stripped="-s" in LINK_FLAGS,
        bundle_bytes=sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
        zip_bytes=_zip_bytes(bundle, work / "greengrass" / backend / case.key / triple, triple),
        compile_wall_seconds=round(wall, 2),
        compiler_seconds=library.build_seconds,
        compiler=library.compiler_version,
        flags=tuple(library.flags),
        bundle=bundle,
    )


def _zip_bytes(bundle: Path, out: Path, triple: str) -> int:
    from edgeboost.recipes import ComponentOptions, package_bundle

    package = package_bundle(
        bundle, out, ComponentOptions(name="com.example.Bench", version="1.0.0")
    )
    assert package.runtime is not None and package.model is not None
    # What a device downloads on its first deployment: the runtime zip and the model zip.
    zips = (package.runtime.zips[triple], package.model.zips[triple])
    return sum(path.stat().st_size for path in zips)

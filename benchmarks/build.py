"""Compile each model once per target and measure what ships: time, library, bundle and zip.

Each target is compiled on its own (``compile_bundle(..., targets=[triple])``), so its wall
time is that of ``edgeboost compile --target TRIPLE`` (C generation, compilers, and for the
host target the 4,096-row parity check), and its bundle and Greengrass zip are exactly what
that platform's devices receive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import ModelCase

__all__ = ["ModelBuild", "TargetBuild", "build_model"]


@dataclass(frozen=True, slots=True)
class TargetBuild:
    triple: str
    bundle: Path
    library_bytes: int
    library_stripped: bool
    bundle_bytes: int
    zip_bytes: int
    wall_seconds: float
    compiler_seconds: float
    compiler: str
    flags: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "triple": self.triple,
            "library_bytes": self.library_bytes,
            "library_stripped": self.library_stripped,
            "bundle_bytes": self.bundle_bytes,
            "zip_bytes": self.zip_bytes,
            "compile_wall_seconds": round(self.wall_seconds, 2),
            "compiler_seconds": self.compiler_seconds,
            "compiler": self.compiler,
            "flags": list(self.flags),
        }


@dataclass(slots=True)
class ModelBuild:
    """The bundles of one model and one backend, per target."""

    case: ModelCase
    backend: str
    host: str
    targets: dict[str, TargetBuild] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def host_bundle(self) -> Path:
        return self.targets[self.host].bundle

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.case.key,
            "backend": self.backend,
            "targets": {t: b.as_dict() for t, b in self.targets.items()},
            "skipped": dict(self.skipped),
        }


def build_model(
    case: ModelCase,
    targets: tuple[str, ...],
    work: Path,
    *,
    backend: str,
    say: Callable[[str], None] = print,
) -> ModelBuild:
    """Compile ``case`` for each target (the host one always, first). A missing cross
    toolchain skips that target with the reason; any other failure is raised."""
    from edgeboost.compile import ToolchainError, resolve_targets
    from edgeboost.runtime.targets import host_target

    host = host_target()
    triples = resolve_targets(("host", *targets))
    result = ModelBuild(case=case, backend=backend, host=host)
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
            f"{built.wall_seconds:.1f} s wall, {built.compiler_seconds:.1f} compiler-s"
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
        bundle=bundle,
        library_bytes=library.size,
        library_stripped="-s" in LINK_FLAGS,
        bundle_bytes=sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
        zip_bytes=_zip_bytes(bundle, work / "greengrass" / backend / case.key / triple, triple),
        wall_seconds=wall,
        compiler_seconds=library.build_seconds,
        compiler=library.compiler_version,
        flags=library.flags,
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

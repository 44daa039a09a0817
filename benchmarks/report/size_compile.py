"""The "What ships" section: library, bundle and zip sizes and compile times per target."""

from __future__ import annotations

from ..results import Failed, RunResults
from .text import table

__all__ = ["size_compile_section"]


def size_compile_section(results: RunResults) -> list[str]:
    out = ["## What ships: size and compile time per target", ""]
    out.append(
        "Protocol: each target compiled on its own, as `edgeboost compile --target T "
        "--backend B` does (C generation: the kernel's tables, or TL2cgen's code with the "
        "bit-exact rewrites; the target's compiler on all cores; for the host target the "
        "parity check against XGBoost); wall time around it, compiler-seconds (the sum over "
        "translation units) from the manifest's `build_seconds`. Library as linked (with `-s`: "
        "stripped). Bundle: manifest, SHA256SUMS and that one library. Zip: the per-platform "
        "Greengrass artifacts from `edgeboost package`, runtime zip + model zip (a new model "
        "alone: the model zip)."
    )
    out.append("")
    rows = []
    for model_key, model in results.models.items():
        for backend, build in model.builds.items():
            for triple, t in build.targets.items():
                rows.append(
                    [
                        model_key,
                        backend,
                        triple,
                        f"{t.library_bytes / 1024:,.0f}"
                        + ("" if t.library_stripped else " (not stripped)"),
                        f"{t.bundle_bytes / 1024:,.0f}",
                        f"{t.zip_bytes / 1024:,.0f}",
                        f"{t.compile_wall_seconds:.1f}",
                        f"{t.compiler_seconds:.1f}",
                    ]
                )
            for triple, reason in build.skipped.items():
                rows.append([model_key, backend, triple, f"skipped: {reason}", "", "", "", ""])
    header = [
        "model",
        "backend",
        "target",
        "library KiB",
        "bundle KiB",
        "zip KiB",
        "compile wall s",
        "compiler-s",
    ]
    out += [*table(header, rows), ""]
    extra = [
        f"{key} for {model_key} {seconds:.1f} s"
        for model_key, model in results.models.items()
        for key, seconds in model.engine_builds.items()
        if not isinstance(seconds, Failed)
    ]
    if extra:
        out += [
            f"Engine preparation, once per model (in no figure above): {'; '.join(extra)}.",
            "",
        ]
    out += ["![sizes](size.png)", ""]
    return out

"""Model: a verified bundle, loaded through cffi, that predicts like XGBoost."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .exceptions import ManifestError, MetadataMismatchError, NoLibraryForPlatformError
from .inputs import to_batch
from .integrity import CHECKSUMS_NAME, read_checksums, verify_file
from .manifest import MANIFEST_NAME, Manifest
from .native import NativeLibrary, open_library
from .targets import host_target

__all__ = ["Model"]


class Model:
    """A compiled model, checked against its manifest before the first prediction.

    Thread safety: ``predict`` may be called from any number of threads at once. The object
    holds no mutable state, the native code keeps none either, and cffi releases the GIL for
    the native call, so threads really run in parallel.
    """

    __slots__ = ("_native", "manifest", "path", "target")

    def __init__(self, *, manifest: Manifest, native: NativeLibrary, path: Path, target: str):
        self.manifest = manifest
        self.path = path
        self.target = target
        self._native = native

    @classmethod
    def load(cls, bundle: str | Path, *, target: str | None = None) -> Model:
        """Load ``bundle`` for this machine (or for ``target``), refusing anything that differs.

        Checks, in order: the manifest's sha256 (SHA256SUMS), the manifest schema, that a
        library exists for the target, the library's sha256, and the library's own metadata
        (ABI version, feature count, output count, threshold type, model hash, backend).
        """
        path = Path(bundle)
        if not (path / MANIFEST_NAME).is_file():
            raise ManifestError(f"{path / MANIFEST_NAME}: no manifest; is {path} a bundle?")
        sums = read_checksums(path)
        if MANIFEST_NAME not in sums:
            raise ManifestError(f"{path / CHECKSUMS_NAME}: does not list {MANIFEST_NAME}")
        verify_file(path, MANIFEST_NAME, sums[MANIFEST_NAME], recorded_in=CHECKSUMS_NAME)
        manifest = Manifest.read(path)

        if target is None:
            try:
                target = host_target()
            except LookupError as exc:
                raise NoLibraryForPlatformError(f"{path}: {exc}") from exc
        library = manifest.targets.get(target)
        if library is None:
            raise NoLibraryForPlatformError(
                f"{path}: no library for target {target}; the bundle has "
                f"{sorted(manifest.targets) or 'none'}. Rebuild with "
                f"`edgeboost compile ... --target {target}`"
            )
        verify_file(path, library.file, library.sha256, recorded_in=MANIFEST_NAME)
        native = open_library(path / library.file)
        _check_library_metadata(native, manifest)
        return cls(manifest=manifest, native=native, path=path, target=target)

    @property
    def num_feature(self) -> int:
        return self.manifest.num_feature

    @property
    def num_output(self) -> int:
        """Values per row: 1 for regression and binary, num_class or num_target otherwise."""
        return self.manifest.num_output

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        return self.manifest.feature_names

    @property
    def name(self) -> str:
        return self.manifest.model.name

    @property
    def sha256(self) -> str:
        """sha256 of the source model file (the identity of the model, not of the library)."""
        return self.manifest.model.sha256

    def predict(self, rows: Any, *, margin: bool = False) -> Any:
        """Predict like XGBoost's ``inplace_predict`` (float32, NaN or None = missing).

        Returns a numpy array (shape (n,) or (n, num_output)) when ``rows`` is a numpy array
        or DataFrame, and otherwise a list of floats (or of lists when num_output > 1).
        Raises InputError (a ValueError) for unusable rows, FeatureNameError for rows keyed
        by the wrong names.
        """
        manifest = self.manifest
        data, n_rows, from_numpy = to_batch(rows, manifest.num_feature, manifest.feature_names)
        n_out = manifest.num_output
        if from_numpy:
            import numpy as np

            out: Any = np.empty((n_rows,) if n_out == 1 else (n_rows, n_out), dtype=np.float32)
        else:
            out = array("f", bytes(4 * n_rows * n_out))
        ffi = self._native.ffi
        status = self._native.lib.edgeboost_predict(
            ffi.from_buffer("float[]", data),
            n_rows,
            manifest.num_feature,
            1 if margin else 0,
            ffi.from_buffer("float[]", out, require_writable=True),
        )
        if status:
            self._native.check(status)
        if from_numpy:
            return out
        values = out.tolist()
        if n_out == 1:
            return values
        return [values[i : i + n_out] for i in range(0, len(values), n_out)]

    def __repr__(self) -> str:
        return (
            f"Model(name={self.name!r}, target={self.target!r}, "
            f"backend={self.manifest.backend!r}, num_feature={self.num_feature})"
        )


def _check_library_metadata(native: NativeLibrary, manifest: Manifest) -> None:
    lib = native.lib
    found: dict[str, Any] = {
        "num_feature": lib.edgeboost_num_feature(),
        "num_output": lib.edgeboost_num_output(),
        "threshold_type": native.string(lib.edgeboost_threshold_type()),
        "backend": native.string(lib.edgeboost_backend()),
        "model sha256": native.string(lib.edgeboost_model_sha256()),
    }
    expected: dict[str, Any] = {
        "num_feature": manifest.num_feature,
        "num_output": manifest.num_output,
        "threshold_type": manifest.threshold_type,
        "backend": manifest.backend,
        "model sha256": manifest.model.sha256,
    }
    differences: Sequence[str] = [
        f"{key}: manifest says {expected[key]!r}, library says {found[key]!r}"
        for key in expected
        if expected[key] != found[key]
    ]
    if differences:
        raise MetadataMismatchError(f"{native.path}: " + "; ".join(differences))

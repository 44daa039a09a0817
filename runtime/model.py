"""Model: a verified bundle, loaded through cffi, that predicts like XGBoost."""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Callable, Sequence
from operator import itemgetter

from .exceptions import ManifestError, MetadataMismatchError, NoLibraryForPlatformError
from .files import MAX_LIBRARY_BYTES
from .inputs import PLAIN_NUMBERS, PLAIN_NUMBERS_OR_NONE, to_batch
from .integrity import check_checksums_cover, read_sealed_manifest, read_verified
from .manifest import MANIFEST_NAME, Manifest
from .native import NativeLibrary, from_buffer, load_library, new, runtime_abi_version, unpack
from .targets import host_target

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Model"]

# numpy.ndarray, numpy.float32's dtype and numpy.empty, filled in by _learn_numpy() the first
# time numpy rows come in: numpy is optional, and importing it costs start-up time.
_ndarray: Any = None
_float32: Any = None
_empty: Any = None


class Model:
    """A compiled model, checked against its manifest before the first prediction.

    Thread safety: ``predict`` may be called from any number of threads at once. The object
    holds no shared mutable state (each thread has its own one-row output buffer), the native
    code keeps none either, and cffi releases the GIL for the native call, so threads really
    run in parallel.
    """

    __slots__ = (
        "_c_predict",
        "_float_array",
        "_named_values",
        "_native",
        "_num_feature",
        "_num_output",
        "_per_thread",
        "_row_out",
        "_value_width",
        "manifest",
        "path",
        "target",
    )

    def __init__(self, *, manifest: Manifest, native: NativeLibrary, path: str, target: str):
        self.manifest = manifest
        self.path = path
        self.target = target
        self._native = native
        # Looked up once: predict() is called per row on devices, where every lookup shows.
        self._c_predict: Callable[..., int] = native.lib.edgeboost_predict
        self._float_array = native.ffi.typeof("float[]")
        self._row_out = native.ffi.typeof(f"float[{manifest.num_output}]")
        # One-row calls reuse an output buffer of their thread's: ffi.new costs ~0.1 us a call.
        self._per_thread = threading.local()
        self._num_feature = manifest.num_feature
        self._num_output = manifest.num_output
        # Values per row without margin: multi:softmax gives one, the class (see edgeboost.h).
        self._value_width = 1 if manifest.postprocessor == "max_index" else manifest.num_output
        names = manifest.feature_names
        # A dict row's values in model order, as a tuple (itemgetter of one name is no tuple).
        self._named_values: Callable[[Any], tuple[Any, ...]] | None = (
            itemgetter(*names) if names and len(names) > 1 else None
        )

    @classmethod
    def load(cls, bundle: str | os.PathLike[str], *, target: str | None = None) -> Model:
        """Load ``bundle`` for this machine (or for ``target``), refusing anything that differs.

        Checks, in order: the manifest's sha256 (SHA256SUMS), the manifest schema, that a
        library exists for the target, that SHA256SUMS and the manifest agree on every
        library, the manifest's ABI version, the library's size and sha256, that it is a
        whole ELF shared object, and the library's own metadata (ABI version, feature count,
        output count, threshold type, model hash, backend).

        Each file is read once, and what is checked is what is used: the manifest is parsed
        from the bytes that were hashed, and the library is loaded from a private copy of
        the bytes that were hashed, never from the bundle's file (see native.load_library).
        """
        path = os.fspath(bundle)
        manifest, sums = read_sealed_manifest(path)
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
        check_checksums_cover(path, sums, manifest.targets, loaded=target)
        _check_manifest_abi(manifest, path)
        image = read_verified(
            path,
            library.file,
            library.sha256,
            recorded_in=MANIFEST_NAME,
            limit=MAX_LIBRARY_BYTES,
            key=f"targets.{target}.file",
            expected_size=library.size,
        )
        native = load_library(image, os.path.join(path, library.file))
        _check_library_metadata(native, manifest)
        # Last, as the least telling: the hash matched, so only the manifest's size is wrong.
        if len(image) != library.size:
            manifest_path = os.path.join(path, MANIFEST_NAME)
            raise ManifestError(
                f"{manifest_path}: targets.{target}.size: expected {len(image):,} "
                f"(the size of {library.file}, whose sha256 matches), found {library.size:,}"
            )
        return cls(manifest=manifest, native=native, path=path, target=target)

    @property
    def num_feature(self) -> int:
        return self.manifest.num_feature

    @property
    def num_output(self) -> int:
        """Margins per row: 1 for regression and binary, num_class or num_target otherwise.
        Values (margin=False) per row are the same, except for multi:softmax: 1, the class."""
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
        or DataFrame, and otherwise a list of floats (or of lists when num_output > 1); zero
        rows give an empty array of that shape, or [].
        Raises InputError (a ValueError) for unusable rows, FeatureNameError for rows keyed
        by the wrong names.
        """
        num_feature = self._num_feature
        kind = type(rows)
        if kind is list and len(rows) == 1:
            # One row, as a list (or tuple) of floats, ints and None (missing) or as a dict
            # with exactly the model's names: the JSON shapes. cffi turns a list argument into
            # a temporary C float array itself (the same double -> float cast as array.array),
            # so it goes to C as it is, None made NaN first. Anything else (bools, strings,
            # other types, wrong names or widths) takes the general path below, which also
            # words the errors.
            row = rows[0]
            row_kind = type(row)
            if row_kind is dict and len(row) == num_feature and self._named_values is not None:
                try:
                    row = self._named_values(row)
                    row_kind = tuple
                except KeyError:
                    pass
            if (row_kind is not list and row_kind is not tuple) or len(row) != num_feature:
                row = None
            elif not PLAIN_NUMBERS.issuperset(map(type, row)):
                missing = PLAIN_NUMBERS_OR_NONE.issuperset(map(type, row))
                row = [_NAN if value is None else value for value in row] if missing else None
            if row is not None:
                try:
                    out = self._per_thread.row_out
                except AttributeError:  # this thread's first one-row call
                    out = self._per_thread.row_out = new(self._row_out, None)
                try:
                    status = self._c_predict(row, 1, num_feature, 1 if margin else 0, out)
                except OverflowError:  # an int beyond double range: the general path says so
                    pass
                else:
                    if status:
                        self._native.check(status)
                    width = self._num_output if margin else self._value_width
                    return [out[0]] if width == 1 else [unpack(out, width)]
        if (
            kind is _ndarray
            and rows.dtype is _float32
            and rows.ndim == 2
            and rows.shape[1] == num_feature
            and len(rows)
            and rows.flags.c_contiguous
        ):
            # What to_batch would return for it (unchanged), minus the checks just made.
            data, n_rows, from_numpy = rows, len(rows), True
        elif kind is array and rows.typecode == "f" and len(rows) == num_feature:
            data, n_rows, from_numpy = rows, 1, False  # one row; to_batch would say the same
        else:
            data, n_rows, from_numpy = to_batch(rows, num_feature, self.manifest.feature_names)
        floats = self._float_array
        n_out = self._num_output if margin else self._value_width
        if from_numpy:
            if _empty is None:
                _learn_numpy()
            # Zero rows too: an empty array of the shape a batch has, (0,) or (0, n_out).
            out = _empty(n_rows if n_out == 1 else (n_rows, n_out), _float32)
            if not n_rows:
                return out
            status = self._c_predict(
                from_buffer(floats, data, False),
                n_rows,
                num_feature,
                1 if margin else 0,
                from_buffer(floats, out, True),
            )
            if status:
                self._native.check(status)
            return out
        if not n_rows:
            return []
        # A cffi-owned C array: cheaper than an array.array plus a from_buffer for it.
        out = new(floats, n_rows * n_out)
        status = self._c_predict(
            from_buffer(floats, data, False), n_rows, num_feature, 1 if margin else 0, out
        )
        if status:
            self._native.check(status)
        values = unpack(out, n_rows * n_out)
        if n_out == 1:
            return values
        return [values[i : i + n_out] for i in range(0, len(values), n_out)]

    def __repr__(self) -> str:
        return (
            f"Model(name={self.name!r}, target={self.target!r}, "
            f"backend={self.manifest.backend!r}, num_feature={self.num_feature})"
        )


_NAN = float("nan")


def _learn_numpy() -> None:
    global _ndarray, _float32, _empty
    import numpy

    _float32, _empty = numpy.dtype("float32"), numpy.empty
    _ndarray = numpy.ndarray  # last: the fast path in predict() keys on it


def _check_manifest_abi(manifest: Manifest, bundle: str) -> None:
    """Refuse a bundle built for another ABI before its library is even read."""
    runtime = runtime_abi_version()
    if manifest.abi_version != runtime:
        raise ManifestError(
            f"{os.path.join(bundle, MANIFEST_NAME)}: abi_version: expected {runtime} (the ABI "
            f"this runtime speaks), found {manifest.abi_version}; rebuild the bundle with this "
            "edgeboost"
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

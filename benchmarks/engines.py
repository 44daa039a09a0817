"""One adapter per engine: how to build it, load it, feed it and read its outputs.

An engine is benchmarked through two small interfaces:

- ``Engine``: a key, the packages it needs, ``build`` (files made once per model, such as
  TL2cgen's library or an ONNX file), ``open`` (load the model in this process) and
  ``coldstart_command`` (the fresh process that measures its import, load and peak RSS);
- ``Session``: an opened model. ``prepare`` turns float32 rows into the engine's own input
  (untimed: the caller already holds data in that form), ``predict`` is the timed call,
  ``outputs`` gives (margin or None, value) for the parity check; ``prepare_inputs`` and
  ``measure`` are what the timing loop calls (the C harness replaces both: it times itself).

Only the standard library is imported here at module level: the fresh processes that measure
start-up import this module, and must not pay for numpy unless the engine does.

``ENGINES`` is the one table of engines. Every edgeboost engine names the backend whose
bundles it loads and the form its rows take: ``edgeboost-BACKEND-FORM`` (``edgeboost_key``),
e.g. ``edgeboost-kernel-numpy`` or ``edgeboost-tl2cgen-c``. An engine's ``backend`` makes the
run compile that backend's bundles too, per target, with their sizes, compile times and
per-target parity; a model for which the config does not compile an engine's backend leaves
that engine out. Adding an engine is one more entry in ``ENGINES``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from .measure import Measurement, time_calls

__all__ = [
    "ENGINES",
    "TL2CGEN_PREDICTOR",
    "XGBOOST_ONE_THREAD",
    "Artifacts",
    "Engine",
    "Inputs",
    "Session",
    "edgeboost_key",
    "select_engines",
]

_THREADS = (
    "uses several threads by default: on a busy shared machine a call can wait for a "
    "descheduled worker thread, which shows in single-row latency (compare nthread=1)"
)
# The peers each backend is compared with: XGBoost on one thread is the fair one-core
# reference; TL2cgen's own predictor (export_lib) is the code generator's.
XGBOOST_ONE_THREAD = "xgboost-inplace-1t"
TL2CGEN_PREDICTOR = "tl2cgen-predictor"
# Distinct batches prepared per batch size (calls cycle through them), and rows at most.
_MAX_BATCHES, _MAX_PREPARED_ROWS = 256, 100_000


@dataclass(frozen=True, slots=True)
class Artifacts:
    """Everything an engine may load for one model. Plain strings: it goes to child processes."""

    model: str
    model_path: str
    feature_names: tuple[str, ...]
    bundles: dict[str, str]  # backend -> bundle compiled for this machine
    work: str
    files: dict[str, str] = field(default_factory=dict)  # made by Engine.build

    def with_files(self, files: dict[str, str]) -> Artifacts:
        return replace(self, files={**self.files, **files})

    def to_json(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "model_path": self.model_path,
                "feature_names": list(self.feature_names),
                "bundles": self.bundles,
                "work": self.work,
                "files": self.files,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Artifacts:
        data = json.loads(text)
        data["feature_names"] = tuple(data["feature_names"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Inputs:
    batch: int
    items: Sequence[Any]


class Session:
    """A model opened by an engine, in this process. Not thread-safe."""

    # Parity is also checked with one row per call (the C harness: its driver takes batches).
    one_row_parity = True

    def prepare(self, rows: Any) -> Any:
        """float32 rows (numpy, C-contiguous) -> what ``predict`` takes. Untimed."""
        return rows

    def predict(self, prepared: Any) -> Any:
        raise NotImplementedError

    def outputs(self, rows: Any) -> tuple[Any, Any]:
        """(margin or None, value) as float32 numpy arrays, for the parity check."""
        raise NotImplementedError

    def coldstart_input(self, row: list[float]) -> Any:
        """One row in the engine's input form, made as a caller would (numpy if it needs it)."""
        import numpy as np

        return self.prepare(np.asarray([row], dtype=np.float32))

    def prepare_inputs(self, rows: Any, batch: int) -> Inputs:
        """Distinct batches of ``batch`` rows, so that calls do not all see the same rows."""
        count = max(1, min(_MAX_BATCHES, len(rows) // batch, _MAX_PREPARED_ROWS // batch))
        return Inputs(
            batch, [self.prepare(rows[i * batch : (i + 1) * batch]) for i in range(count)]
        )

    def measure(self, inputs: Inputs, calls: int) -> Measurement:
        return time_calls(self.predict, inputs.items, inputs.batch, calls)

    def close(self) -> None:
        """Release what ``open`` loaded."""


class Engine:
    key: str = ""
    label: str = ""
    # "edgeboost" engines must match XGBoost bit for bit; the run fails otherwise.
    family: str = "peer"
    # Import names that must be present, and distributions whose versions are reported.
    imports: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    # XGBoost's DMatrix refuses +-inf; such engines are compared on the other rows.
    accepts_inf: bool = True
    # Said next to the engine's numbers in the report, and next to its parity row.
    note: str = ""
    parity_note: str = ""
    # The edgeboost backend whose bundles the engine loads (None: it needs none), and the form
    # its rows take ("numpy", "array", "dicts" from Python; "c" from the C harness).
    backend: str | None = None
    form: str | None = None

    def unavailable(self) -> str | None:
        """Why this engine cannot run here, or None."""
        for name in self.imports:
            if importlib.util.find_spec(name) is None:
                extra = " (pip install 'edgeboost[bench]')" if self.family == "peer" else ""
                return f"{name} is not installed{extra}"
        return None

    def build(self, artifacts: Artifacts) -> dict[str, str]:
        """Make this engine's files for a model (in the parent process, once)."""
        return {}

    def import_modules(self) -> None:
        for name in self.imports:
            importlib.import_module(name)

    def open(self, artifacts: Artifacts) -> Session:
        raise NotImplementedError

    def coldstart_command(self, artifacts_file: Path, artifacts: Artifacts) -> list[str]:
        """The fresh process that imports, loads, predicts one row and reports as JSON."""
        return [
            sys.executable,
            "-m",
            "edgeboost.benchmarks.coldstart",
            self.key,
            str(artifacts_file),
        ]


@contextmanager
def _native_output_to(log: Path) -> Iterator[None]:
    """Send what native code writes to file descriptors 1 and 2 into ``log``."""
    # Imported here: the edgeboost.compile package loads numpy and the runtime, which the
    # fresh start-up processes (this module is their engine table) must not pay for.
    from edgeboost.compile.native_output import native_output_to

    with open(log, "wb") as sink, native_output_to(sink):
        yield


def _column(values: Any, rows: int) -> Any:
    """Engine output -> float32 (n,) for one output, (n, k) for several."""
    import numpy as np

    out = np.asarray(values, dtype=np.float32).reshape(rows, -1)
    return out[:, 0] if out.shape[1] == 1 else out


# --- XGBoost --------------------------------------------------------------------------------


class _BoosterSession(Session):
    def __init__(self, artifacts: Artifacts, nthread: int | None, dmatrix: bool) -> None:
        import xgboost

        self.xgb = xgboost
        self.booster = xgboost.Booster(model_file=artifacts.model_path)
        if nthread is not None:
            self.booster.set_param({"nthread": nthread})
        self.dmatrix = dmatrix
        self.names = self.booster.feature_names

    def predict(self, prepared: Any) -> Any:
        if self.dmatrix:
            matrix = self.xgb.DMatrix(prepared, missing=math.nan, feature_names=self.names)
            return self.booster.predict(matrix)
        return self.booster.inplace_predict(prepared, missing=math.nan)

    def outputs(self, rows: Any) -> tuple[Any, Any]:
        if self.dmatrix:
            matrix = self.xgb.DMatrix(rows, missing=math.nan, feature_names=self.names)
            margin = self.booster.predict(matrix, output_margin=True)
            value = self.booster.predict(matrix)
        else:
            margin = self.booster.inplace_predict(rows, predict_type="margin", missing=math.nan)
            value = self.booster.inplace_predict(rows, missing=math.nan)
        return _column(margin, len(rows)), _column(value, len(rows))


class XGBoostDMatrix(Engine):
    key, label = "xgboost-dmatrix", "xgboost Booster.predict(DMatrix)"
    imports, distributions = ("xgboost",), ("xgboost-cpu", "xgboost")
    accepts_inf = False
    note = f"a DMatrix is built from the rows inside each timed call, as a caller must; {_THREADS}"

    def open(self, artifacts: Artifacts) -> Session:
        return _BoosterSession(artifacts, nthread=None, dmatrix=True)


class XGBoostInplace(Engine):
    imports, distributions = ("xgboost",), ("xgboost-cpu", "xgboost")

    def __init__(self, nthread: int | None = None) -> None:
        self.nthread = nthread
        suffix = "" if nthread is None else f"-{nthread}t"
        self.key = f"xgboost-inplace{suffix}"
        threads = "default threads" if nthread is None else f"nthread={nthread}"
        self.label = f"xgboost inplace_predict ({threads})"
        self.note = _THREADS if nthread is None else ""

    def open(self, artifacts: Artifacts) -> Session:
        return _BoosterSession(artifacts, nthread=self.nthread, dmatrix=False)


# --- Treelite GTIL and TL2cgen ----------------------------------------------------------------


class _GTILSession(Session):
    def __init__(self, artifacts: Artifacts) -> None:
        import treelite

        self.gtil = treelite.gtil
        self.model = treelite.frontend.load_xgboost_model(artifacts.model_path)

    def predict(self, prepared: Any) -> Any:
        return self.gtil.predict(self.model, prepared)

    def outputs(self, rows: Any) -> tuple[Any, Any]:
        margin = self.gtil.predict(self.model, rows, pred_margin=True)
        return _column(margin, len(rows)), _column(self.gtil.predict(self.model, rows), len(rows))


class TreeliteGTIL(Engine):
    key, label = "treelite-gtil", "Treelite GTIL (treelite.gtil.predict)"
    imports = distributions = ("treelite",)
    note = _THREADS

    def open(self, artifacts: Artifacts) -> Session:
        return _GTILSession(artifacts)


class _TL2cgenSession(Session):
    def __init__(self, artifacts: Artifacts) -> None:
        import tl2cgen

        self.tl2cgen = tl2cgen
        self.predictor = tl2cgen.Predictor(artifacts.files["tl2cgen_lib"])

    def predict(self, prepared: Any) -> Any:
        return self.predictor.predict(self.tl2cgen.DMatrix(prepared))

    def outputs(self, rows: Any) -> tuple[Any, Any]:
        matrix = self.tl2cgen.DMatrix(rows)
        margin = self.predictor.predict(matrix, pred_margin=True)
        return _column(margin, len(rows)), _column(self.predictor.predict(matrix), len(rows))


class TL2cgenPredictor(Engine):
    key, label = TL2CGEN_PREDICTOR, "tl2cgen.Predictor (export_lib, default options)"
    imports = ("tl2cgen", "treelite")
    distributions = ("tl2cgen",)
    note = (
        "TL2cgen's own build: gcc -O3, default code generation; parallel_comp splits the C "
        f"into files (build time only); {_THREADS}"
    )

    def build(self, artifacts: Artifacts) -> dict[str, str]:
        import tl2cgen
        import treelite

        model = treelite.frontend.load_xgboost_model(artifacts.model_path)
        units = max(2, min(model.num_tree // 64, 64))
        libpath = Path(artifacts.work) / "engines" / "tl2cgen" / f"{artifacts.model}.so"
        libpath.parent.mkdir(parents=True, exist_ok=True)
        # TL2cgen's C++ side prints to the process's stdout; keep it out of the report table.
        with _native_output_to(libpath.with_suffix(".log")):
            tl2cgen.export_lib(
                model, toolchain="gcc", libpath=str(libpath), params={"parallel_comp": units}
            )
        return {"tl2cgen_lib": str(libpath)}

    def open(self, artifacts: Artifacts) -> Session:
        return _TL2cgenSession(artifacts)


# --- ONNX Runtime -------------------------------------------------------------------------------


class _OnnxSession(Session):
    def __init__(self, artifacts: Artifacts) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            artifacts.files["onnx"], providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        self.names = [o.name for o in self.session.get_outputs()]

    def predict(self, prepared: Any) -> Any:
        return self.session.run(None, {self.input: prepared})

    def outputs(self, rows: Any) -> tuple[Any, Any]:
        produced = dict(zip(self.names, self.predict(rows), strict=True))
        if "probabilities" in produced:  # classifiers: [label, probabilities]
            value = produced["probabilities"][:, 1]
        else:
            value = produced[self.names[0]]
        return None, _column(value, len(rows))


class OnnxRuntime(Engine):
    key, label = "onnxruntime", "ONNX Runtime (onnxmltools conversion)"
    imports = ("onnxruntime", "onnxmltools")
    distributions = ("onnxruntime", "onnxmltools", "onnx")
    note = "no margin output: values compared; default session options (CPU provider); " + _THREADS

    def build(self, artifacts: Artifacts) -> dict[str, str]:
        import xgboost
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        booster = xgboost.Booster(model_file=artifacts.model_path)
        width = booster.num_features()
        # onnxmltools reads features by their default names (f0, f1, ...) only.
        booster.feature_names = None
        booster.feature_types = None
        model = convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, width]))])
        path = Path(artifacts.work) / "engines" / "onnx" / f"{artifacts.model}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model.SerializeToString())
        return {"onnx": str(path)}

    def import_modules(self) -> None:
        importlib.import_module("onnxruntime")  # onnxmltools is only needed to convert

    def open(self, artifacts: Artifacts) -> Session:
        return _OnnxSession(artifacts)


# --- oneDAL (daal4py) ---------------------------------------------------------------------------


def _import_daal4py() -> Any:
    """daal4py, for its model builder (daal4py.mb) only.

    daal4py's ``__init__`` also imports its scikit-learn patches (``daal4py.sklearn``), which
    the model builder does not use and which fail with scikit-learn releases newer than the
    daal4py wheel (2024.7 against scikit-learn 1.9: ``_check_multi_class`` is gone). An empty
    module stands in for them, in every process alike, so that the import measured is the
    model builder's whatever scikit-learn is installed.
    """
    import types

    sys.modules.setdefault("daal4py.sklearn", types.ModuleType("daal4py.sklearn"))
    return importlib.import_module("daal4py")


def _daal4py_booster(booster: Any) -> Any:
    """``booster``, readable by daal4py's converter: XGBoost 3 writes base_score as a vector
    ("[5.796742E0]") where daal4py 2024.x parses one number. One output: that number; the
    booster's own save_config is replaced on this instance only."""
    config = json.loads(booster.save_config())
    param = config["learner"]["learner_model_param"]
    text = str(param["base_score"])
    if text.startswith("["):
        values = text.strip("[]").split(",")
        if len(values) != 1:
            raise ValueError(f"daal4py takes one base_score; this model has {len(values)}")
        param["base_score"] = values[0]
        fixed = json.dumps(config)
        booster.save_config = lambda: fixed
    return booster


class _OneDALSession(Session):
    def __init__(self, artifacts: Artifacts) -> None:
        import pickle

        _import_daal4py()
        with open(artifacts.files["onedal"], "rb") as file:
            self.model = pickle.load(file)  # our own file, written by OneDAL.build
        # Regression: predict gives the value, which is the margin (identity link).
        # Classification: predict gives class labels; the value is predict_proba's.
        self.regression = self.model.n_classes_ < 2  # XGBoost's num_class: 0 for regression
        self.call = self.model.predict if self.regression else self.model.predict_proba

    def predict(self, prepared: Any) -> Any:
        return self.call(prepared)

    def outputs(self, rows: Any) -> tuple[Any, Any]:
        if self.regression:
            value = _column(self.model.predict(rows), len(rows))
            return value, value
        proba = self.model.predict_proba(rows)
        return None, _column(proba[:, 1] if proba.shape[1] == 2 else proba, len(rows))


class OneDAL(Engine):
    key, label = "onedal", "oneDAL (daal4py.mb.convert_model of the booster)"
    imports = distributions = ("daal4py",)
    note = (
        "imported without daal4py's scikit-learn patches (not used here; they fail with "
        "newer scikit-learn); regression models: predict() is the margin and is compared as "
        f"one, classifiers: predict_proba() values; {_THREADS}"
    )

    def build(self, artifacts: Artifacts) -> dict[str, str]:
        import pickle

        import xgboost

        d4p = _import_daal4py()
        booster = _daal4py_booster(xgboost.Booster(model_file=artifacts.model_path))
        model = d4p.mb.convert_model(booster)
        path = Path(artifacts.work) / "engines" / "onedal" / f"{artifacts.model}.pickle"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(model))
        return {"onedal": str(path)}

    def import_modules(self) -> None:
        _import_daal4py()

    def open(self, artifacts: Artifacts) -> Session:
        return _OneDALSession(artifacts)


# --- edgeboost ---------------------------------------------------------------------------------


class _EdgeboostSession(Session):
    def __init__(self, artifacts: Artifacts, backend: str, form: str) -> None:
        from edgeboost.runtime import Model

        self.model = Model.load(artifacts.bundles[backend])
        self.form = form
        self.names = artifacts.feature_names

    def prepare(self, rows: Any) -> Any:
        if self.form == "numpy":
            return rows
        if self.form == "array":
            return array("f", rows.tobytes())
        return [self._record(row) for row in rows.tolist()]

    def _record(self, row: list[float]) -> dict[str, float | None]:
        # As decoded from JSON: missing values are null.
        return {n: (None if math.isnan(v) else v) for n, v in zip(self.names, row, strict=True)}

    def coldstart_input(self, row: list[float]) -> Any:
        if self.form == "array":
            return array("f", row)
        if self.form == "dicts":
            return [self._record(row)]
        return super().coldstart_input(row)

    def predict(self, prepared: Any) -> Any:
        return self.model.predict(prepared)

    def outputs(self, rows: Any) -> tuple[Any, Any]:
        prepared = self.prepare(rows)
        margin = self.model.predict(prepared, margin=True)
        return _column(margin, len(rows)), _column(self.model.predict(prepared), len(rows))


def edgeboost_key(backend: str, form: str) -> str:
    """The key of the edgeboost engine that loads ``backend``'s bundles with rows in ``form``."""
    return f"edgeboost-{backend}-{form}"


class EdgeboostRuntime(Engine):
    family = "edgeboost"
    imports: tuple[str, ...] = ("cffi",)
    distributions = ("edgeboost", "cffi")
    _FORMS: ClassVar[dict[str, str]] = {
        "numpy": "numpy float32 rows (zero-copy)",
        "array": "array.array('f'), no numpy",
        "dicts": "list of dicts by feature name, no numpy",
    }

    def __init__(self, form: str, *, backend: str) -> None:
        if form not in self._FORMS:
            raise ValueError(f"unknown input form {form!r}; known: {sorted(self._FORMS)}")
        self.form = form
        self.backend = backend
        self.key = edgeboost_key(backend, form)
        self.label = f"edgeboost {backend} backend, runtime ({self._FORMS[form]})"
        if form == "numpy":
            self.imports = ("cffi", "numpy")

    def import_modules(self) -> None:
        importlib.import_module("edgeboost.runtime")
        if self.form == "numpy":
            importlib.import_module("numpy")

    def open(self, artifacts: Artifacts) -> Session:
        assert self.backend is not None and self.form is not None
        return _EdgeboostSession(artifacts, self.backend, self.form)


class _HarnessSession(Session):
    one_row_parity = False

    def __init__(self, artifacts: Artifacts, backend: str) -> None:
        self.binary = Path(artifacts.files[f"c_bench_{backend}"])
        self.bundle = Path(artifacts.bundles[backend])
        self.rows_file = Path(artifacts.work) / "engines" / "c" / f"{artifacts.model}-rows.bin"
        self._rows_written: int | None = None

    def prepare_inputs(self, rows: Any, batch: int) -> Inputs:
        from edgeboost.compile.emulation import write_rows

        if self._rows_written != id(rows):
            self.rows_file.parent.mkdir(parents=True, exist_ok=True)
            write_rows(self.rows_file, rows)
            self._rows_written = id(rows)
        return Inputs(batch, [self.rows_file])

    def measure(self, inputs: Inputs, calls: int) -> Measurement:
        from .harness import run_harness

        return run_harness(self.binary, inputs.items[0], inputs.batch, calls)

    def predict(self, prepared: Any) -> Any:
        raise NotImplementedError("the C harness is timed in its own process")

    def outputs(self, rows: Any) -> tuple[Any, Any]:
        # The parity driver calls edgeboost_predict of the same library, from C.
        from edgeboost.compile.emulation import run_library
        from edgeboost.runtime.manifest import Manifest
        from edgeboost.runtime.targets import host_target

        triple = host_target()
        library = self.bundle / Manifest.read(self.bundle).targets[triple].file
        margin, value = run_library(triple, library, rows)
        return _column(margin, len(rows)), _column(value, len(rows))


class EdgeboostC(Engine):
    family = "edgeboost"
    form = "c"
    note = "timed inside the C process (clock_gettime); parity through native/parity_driver.c"

    def __init__(self, *, backend: str) -> None:
        self.backend = self._backend_name = backend
        self.key = edgeboost_key(backend, "c")
        self.label = f"edgeboost {backend} backend, from C (c_bench, no Python)"

    def unavailable(self) -> str | None:
        import shutil

        return None if shutil.which("gcc") or shutil.which("cc") else "no C compiler"

    def build(self, artifacts: Artifacts) -> dict[str, str]:
        from edgeboost.compile.emulation import write_rows
        from edgeboost.runtime.manifest import Manifest
        from edgeboost.runtime.targets import host_target

        from .harness import build_harness

        bundle = Path(artifacts.bundles[self._backend_name])
        library = bundle / Manifest.read(bundle).targets[host_target()].file
        out = Path(artifacts.work) / "engines" / "c" / f"{artifacts.model}-{self._backend_name}"
        binary = build_harness(library, out / "c_bench")
        import numpy as np

        one_row = out / "one-row.bin"
        write_rows(one_row, np.zeros((1, len(artifacts.feature_names)), dtype=np.float32))
        return {
            f"c_bench_{self._backend_name}": str(binary),
            f"c_bench_{self._backend_name}_row": str(one_row),
        }

    def import_modules(self) -> None:
        pass

    def open(self, artifacts: Artifacts) -> Session:
        return _HarnessSession(artifacts, self._backend_name)

    def coldstart_command(self, artifacts_file: Path, artifacts: Artifacts) -> list[str]:
        row = artifacts.files[f"c_bench_{self._backend_name}_row"]
        binary = artifacts.files[f"c_bench_{self._backend_name}"]
        return [binary, row, "1", "1", os.devnull]


# The kernel backend (compile's default) in every input form; the tl2cgen backend, its
# reference, from Python with numpy and from C, for the side-by-side of the two backends.
ENGINES: dict[str, Engine] = {
    engine.key: engine
    for engine in (
        XGBoostDMatrix(),
        XGBoostInplace(),
        XGBoostInplace(nthread=1),
        TL2cgenPredictor(),
        TreeliteGTIL(),
        OnnxRuntime(),
        OneDAL(),
        EdgeboostRuntime("numpy", backend="kernel"),
        EdgeboostRuntime("array", backend="kernel"),
        EdgeboostRuntime("dicts", backend="kernel"),
        EdgeboostC(backend="kernel"),
        EdgeboostRuntime("numpy", backend="tl2cgen"),
        EdgeboostC(backend="tl2cgen"),
    )
}


def select_engines(keys: Sequence[str]) -> list[Engine]:
    """The engines named (all when empty), in ENGINES order; unknown names are refused."""
    unknown = sorted(set(keys) - set(ENGINES))
    if unknown:
        raise ValueError(f"unknown engines {unknown}; known: {', '.join(ENGINES)}")
    return [e for key, e in ENGINES.items() if not keys or key in keys]

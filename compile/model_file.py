"""Read an XGBoost model file and check it before XGBoost or Treelite see it.

Handed a damaged or unexpected file, XGBoost and Treelite fail with a C++ check, its source
path and a stack trace (a truncated file, ``{"learner": 5}``), or with a message about
something else (an empty file or a ``get_dump`` list passed for "legacy binary"), or, for
categorical splits, with one of three messages depending on the XGBoost version that saved
the model. So the file is read and checked here first: every model edgeboost cannot compile
is refused with one line, a ``ModelFileError``, that names the file and, where it applies,
the key, tree or feature, and says what to do.

What is checked is what the compile step relies on: the document's shape down to each
tree's arrays, the booster, the objective (against the supported list the caller passes),
categorical features, vector leaves. XGBoost then loads the same bytes; whatever it still
refuses is one line too (``ModelFile.load_booster``).
"""

from __future__ import annotations

import json
import re
import struct
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._deps import require
from .errors import UnsupportedModelError
from .ubjson import UBJSONError, decode

__all__ = [
    "ModelFile",
    "ModelFileError",
    "first_line",
    "load_booster",
    "read_model_file",
    "sniff_format",
]

# XGBoost's legacy binary format: optional "binf", a 136-byte parameter block, then the
# objective's name as a uint64 length and its characters.
_LEGACY_PARAM_BYTES = 136
_LEGACY_NAME = re.compile(rb"[a-z]+:[a-z_]+\Z")
# XGBoost's messages start "[12:11:22] /workspace/src/c_api/c_api.cc:1530: "; the reader
# needs what follows.
_XGBOOST_PREFIX = re.compile(r"^\[[0-9:]+\] [^ ]+:\d+: ")
_PRE_1_6_WARNING = "saved before XGBoost 1.6"
_TREE_DUMP = (
    "a tree dump (Booster.get_dump or dump_model output), which XGBoost cannot load back; save "
    "the model itself with booster.save_model('model.json')"
)
# The per-node arrays of a tree that the compile step reads, each num_nodes long.
_TREE_ARRAYS = (
    "left_children",
    "right_children",
    "split_indices",
    "split_conditions",
    "default_left",
    "split_type",
)


class ModelFileError(UnsupportedModelError):
    """The file is not a model edgeboost can compile; the message is one line naming it."""


@dataclass(frozen=True)
class ModelFile:
    """A model file, read and checked; ``doc`` is the decoded document."""

    path: Path
    raw: bytes
    format: str  # "xgboost-json" | "xgboost-ubjson"
    doc: dict[str, Any]
    version: tuple[int, ...] | None  # of the XGBoost that saved it, when it says
    objective: str
    num_feature: int
    num_tree: int
    feature_names: tuple[str, ...] | None
    best_iteration: int | None  # recorded by early stopping

    def load_booster(self) -> Any:
        return load_booster(self.raw, self.path)

    def old_format_note(self) -> str | None:
        """One line for a model saved before XGBoost 1.6, which XGBoost warns it will stop
        reading; None otherwise."""
        if self.version is None or self.version >= (1, 6):
            return None
        saved = ".".join(map(str, self.version))
        name = self.path.name
        return (
            f"note: {self.path} was saved by XGBoost {saved}; this XGBoost still reads it but "
            'will stop reading JSON from before 1.6: re-save it with python -c "import '
            f"xgboost; xgboost.Booster(model_file='{name}').save_model('{name}')\""
        )


def load_booster(raw: bytes, path: Path) -> Any:
    """An xgboost.Booster of ``raw`` (the bytes of ``path``); a refusal is one line.

    XGBoost's warning about a model from before 1.6 is dropped: it comes once per load, with
    a stray source line, and ``ModelFile.old_format_note`` says it once. Others pass through.
    """
    xgb = require("xgboost")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return xgb.Booster(model_file=bytearray(raw))
        except xgb.core.XGBoostError as exc:
            message = f"{path}: XGBoost {xgb.__version__} cannot load it: {first_line(exc)}"
            raise ModelFileError(message) from None
        finally:
            for warning in caught:
                if _PRE_1_6_WARNING not in str(warning.message):
                    warnings.warn_explicit(
                        warning.message, warning.category, warning.filename, warning.lineno
                    )


def sniff_format(raw: bytes) -> str | None:
    """ "xgboost-json" or "xgboost-ubjson" for a document that starts like one, else None.

    Both start with '{'; JSON's next significant byte is '"' or '}', UBJSON's a length marker.
    """
    stripped = raw.lstrip()
    if not stripped.startswith(b"{"):
        return None
    return "xgboost-json" if stripped[1:].lstrip()[:1] in (b'"', b"}") else "xgboost-ubjson"


def read_model_file(path: str | Path, objectives: Collection[str]) -> ModelFile:
    """Read and check ``path``; ``objectives`` are the ones the caller compiles."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    fmt, doc = _decode(path, raw)
    return _Checker(path, raw, fmt, doc, objectives).model_file()


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode(path: Path, raw: bytes) -> tuple[str, Any]:
    fmt = sniff_format(raw)
    if fmt is None:
        raise ModelFileError(f"{path}: {_not_a_document(path, raw)}")
    if fmt == "xgboost-ubjson":
        try:
            return fmt, decode(raw)
        except UBJSONError as exc:
            if exc.truncated:
                raise ModelFileError(
                    f"{path}: truncated: the UBJSON ends at byte {len(raw)} before the model "
                    "is complete"
                ) from None
            raise ModelFileError(f"{path}: not valid UBJSON at byte {exc.offset}: {exc}") from None
    return fmt, _json(path, raw)


def _json(path: Path, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(
            f"{path}: not valid JSON: not UTF-8 text at byte {exc.start}"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise ModelFileError(
                f"{path}: truncated: the JSON ends at byte {len(raw)} before the model is complete"
            ) from None
        raise ModelFileError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise ModelFileError(f"{path}: not valid JSON: nested too deeply") from None


def _not_a_document(path: Path, raw: bytes) -> str:
    """What a file that is neither JSON nor UBJSON object is, and what to do about it."""
    stripped = raw.lstrip()
    if not stripped:
        return "empty file: not an XGBoost model"
    if stripped.startswith(b"booster[0]"):
        return _TREE_DUMP
    if stripped.startswith(b"["):
        try:
            dump = json.loads(stripped)
        except (ValueError, RecursionError):
            dump = None
        if isinstance(dump, list) and all(_is_tree_dump(tree) for tree in dump):
            return _TREE_DUMP
        return "a JSON list, not an XGBoost model (a JSON object with a 'learner' key)"
    objective = _legacy_binary_objective(raw)
    if objective is not None:
        name = path.name
        return (
            f"XGBoost's legacy binary format (objective {objective}), which XGBoost 3.1 and "
            "later cannot read; re-save it as JSON with XGBoost 3.0 or older: "
            f"pip install 'xgboost<3.1' && python -c \"import xgboost; "
            f"xgboost.Booster(model_file='{name}').save_model('{path.stem}.json')\""
        )
    if raw[:1] == b"\x80":
        return (
            "a Python pickle, not an XGBoost model file; load it where it was made and save "
            "the model with .save_model('model.json') (XGBRegressor, XGBClassifier and Booster "
            "have it)"
        )
    return (
        "not an XGBoost model: neither JSON, UBJSON nor the legacy binary format "
        f"(it starts with {raw[:8]!r})"
    )


def _is_tree_dump(tree: Any) -> bool:
    """One tree of get_dump(dump_format="json") (an object with "nodeid") or of a text dump."""
    if isinstance(tree, dict):
        return "nodeid" in tree
    return isinstance(tree, str) and ("leaf=" in tree or tree.startswith("0:"))


def _legacy_binary_objective(raw: bytes) -> str | None:
    start = 4 if raw.startswith(b"binf") else 0
    at = start + _LEGACY_PARAM_BYTES
    if len(raw) < at + 8:
        return None
    (length,) = struct.unpack_from("<Q", raw, at)
    name = raw[at + 8 : at + 8 + length] if 0 < length < 64 else b""
    return name.decode("ascii") if _LEGACY_NAME.match(name) else None


def first_line(exc: BaseException) -> str:
    """The first line of a native library's message, without its time stamp and source path."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return _XGBOOST_PREFIX.sub("", lines[0]).strip().rstrip(" :")


# ---------------------------------------------------------------------------------------------
# Checking the document


class _Checker:
    """Checks a decoded document; each error names the key (``learner.objective.name``)."""

    def __init__(
        self, path: Path, raw: bytes, fmt: str, doc: Any, objectives: Collection[str]
    ) -> None:
        self.path, self.raw, self.fmt, self.doc = path, raw, fmt, doc
        self.objectives = objectives

    def fail(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {message}")

    def get(
        self, parent: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str
    ) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in parent:
            raise self.fail(f"{name}: missing")
        value = parent[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(f"{name}: expected {_kind_name(kind)}, found {_describe(value)}")
        return value

    def number(self, parent: dict[str, Any], key: str, where: str, cast: type = int) -> Any:
        """XGBoost writes its parameters as strings ("13", "5E-1"); older files as numbers."""
        value = self.get(parent, key, (str, int, float), where)
        try:
            return cast(value.strip("[]") if isinstance(value, str) else value)
        except ValueError:
            raise self.fail(f"{where}.{key}: expected a number, found {_describe(value)}") from None

    def model_file(self) -> ModelFile:
        doc = self.doc
        if not isinstance(doc, dict):
            raise self.fail(f"a JSON {_describe(doc)}, not an XGBoost model")
        if "learner" not in doc:
            keys = ", ".join(repr(k) for k in list(doc)[:5]) or "none"
            raise self.fail(f"not an XGBoost model: no 'learner' key (keys: {keys})")
        learner = self.get(doc, "learner", dict, "")
        if "learner_train_param" in learner or "generic_param" in learner:  # never in a model
            raise self.fail(
                "a training configuration (Booster.save_config output), not a model; save the "
                "model with booster.save_model('model.json')"
            )
        version = self._version()
        params = self.get(learner, "learner_model_param", dict, "learner")
        num_feature = self.number(params, "num_feature", "learner.learner_model_param")
        names = self._feature_list(learner, "feature_names", num_feature)
        types = self._feature_list(learner, "feature_types", num_feature)
        booster = self.get(learner, "gradient_booster", dict, "learner")
        kind = self.get(booster, "name", str, "learner.gradient_booster")
        if kind != "gbtree":
            raise self.fail(
                f"booster {kind!r} is not supported; edgeboost compiles gbtree boosters only "
                "(train with booster='gbtree')"
            )
        objective = self.get(
            self.get(learner, "objective", dict, "learner"), "name", str, "learner.objective"
        )
        if objective not in self.objectives:
            raise self.fail(
                f"objective {objective!r} is not supported; supported: "
                + ", ".join(sorted(self.objectives))
            )
        model = self.get(booster, "model", dict, "learner.gradient_booster")
        trees = self.get(model, "trees", list, "learner.gradient_booster.model")
        tree_info = self.get(model, "tree_info", list, "learner.gradient_booster.model")
        if len(tree_info) != len(trees):
            raise self.fail(
                f"learner.gradient_booster.model.tree_info: {len(tree_info)} entries for "
                f"{len(trees)} trees"
            )
        categorical: dict[int, int | None] = {}  # feature -> first tree splitting on it
        for index, tree in enumerate(trees):
            self._tree(index, tree, num_feature, categorical)
        self._categorical(model, types, categorical, names)
        return ModelFile(
            path=self.path,
            raw=self.raw,
            format=self.fmt,
            doc=doc,
            version=version,
            objective=objective,
            num_feature=num_feature,
            num_tree=len(trees),
            feature_names=names,
            best_iteration=self._best_iteration(learner),
        )

    def _version(self) -> tuple[int, ...] | None:
        version = self.doc.get("version")
        if version is None:
            return None
        if not (isinstance(version, list) and version and all(_is_int(v) for v in version)):
            raise self.fail(f"version: expected a list of integers, found {_describe(version)}")
        return tuple(version)

    def _feature_list(
        self, learner: dict[str, Any], key: str, num_feature: int
    ) -> tuple[str, ...] | None:
        values = learner.get(key)
        if values is None or values == []:
            return None
        where = f"learner.{key}"
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise self.fail(f"{where}: expected a list of strings, found {_describe(values)}")
        if len(values) != num_feature:
            raise self.fail(f"{where}: {len(values)} entries for {num_feature} features")
        return tuple(values)

    def _tree(
        self, index: int, tree: Any, num_feature: int, categorical: dict[int, int | None]
    ) -> None:
        where = f"learner.gradient_booster.model.trees[{index}]"
        if not isinstance(tree, dict):
            raise self.fail(f"{where}: expected an object, found {_describe(tree)}")
        param = self.get(tree, "tree_param", dict, where)
        nodes = self.number(param, "num_nodes", f"{where}.tree_param")
        # Absent in some versions' files: then a tree has scalar leaves.
        vector = "size_leaf_vector" in param
        if vector and self.number(param, "size_leaf_vector", f"{where}.tree_param") > 1:
            raise self.fail(
                f"tree {index} has vector leaves (multi_strategy='multi_output_tree'); edgeboost "
                "compiles one output per tree: train with multi_strategy='one_output_per_tree'"
            )
        arrays = {}
        for key in _TREE_ARRAYS:
            if key == "split_type" and key not in tree:  # before XGBoost 1.6: all numerical
                arrays[key] = [0] * nodes
                continue
            values = self.get(tree, key, list, where)
            if len(values) != nodes:
                raise self.fail(f"{where}.{key}: {len(values)} values for {nodes} nodes")
            arrays[key] = values
        left, right = arrays["left_children"], arrays["right_children"]
        feature, split_type = arrays["split_indices"], arrays["split_type"]
        for node in range(nodes):
            if left[node] == -1:
                continue
            for child in (left[node], right[node]):
                if not _is_int(child) or not 0 < child < nodes:
                    raise self.fail(
                        f"tree {index}: node {node} has child {_show(child)}, outside its "
                        f"{nodes} nodes"
                    )
            if not _is_int(feature[node]) or not 0 <= feature[node] < num_feature:
                raise self.fail(
                    f"tree {index}: node {node} splits on feature {_show(feature[node])}, "
                    f"but the model has {num_feature} features"
                )
            if split_type[node] == 1:
                categorical.setdefault(int(feature[node]), index)

    def _categorical(
        self,
        model: dict[str, Any],
        types: Sequence[str] | None,
        split_on: dict[int, int | None],
        names: Sequence[str] | None,
    ) -> None:
        """One message for a categorical model, whichever XGBoost saved it: 1.x and 2.x mark
        the splits and feature types, 3.1+ may also keep the categories (its encoder)."""
        declared = [i for i, t in enumerate(types or ()) if t == "c"]
        encoded = [
            i
            for i, categories in enumerate(model.get("cats", {}).get("enc") or [])
            if isinstance(categories, dict) and categories.get("values")
        ]
        features = sorted({*split_on, *declared, *encoded})
        if not features:
            return
        first = features[0]
        name = f"feature {names[first]!r} (column {first})" if names else f"feature {first}"
        tree = split_on.get(first)
        where = f", split on in tree {tree}" if tree is not None else ""
        raise self.fail(
            f"{name} is categorical{where}; edgeboost compiles numerical splits only: one-hot "
            "encode it and retrain"
        )

    def _best_iteration(self, learner: dict[str, Any]) -> int | None:
        attributes = learner.get("attributes") or {}
        if not isinstance(attributes, dict) or "best_iteration" not in attributes:
            return None
        value = attributes["best_iteration"]
        try:
            return int(value)
        except (TypeError, ValueError):
            raise self.fail(
                f"learner.attributes.best_iteration: expected an integer, found {_describe(value)}"
            ) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """An integer as itself, anything else by its kind."""
    return str(value) if _is_int(value) else _describe(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
    }
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def _describe(value: Any) -> str:
    """A value's JSON kind, with the value itself when it is short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({text!r})"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "an object"

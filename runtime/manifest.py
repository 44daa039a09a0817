"""manifest.json: the contract between compile/ (which writes it) and runtime/ (which checks it).

A bundle is a folder::

    manifest.json                 this schema
    SHA256SUMS                    sha256 of manifest.json and of every library (``sha256sum -c``)
    lib/<target>/libmodel.so      one library per target

Only the standard library is used here: the device has no numpy and no jsonschema.
"""

from __future__ import annotations

import json
import math
import os

from .exceptions import ManifestError
from .files import MAX_LIBRARY_BYTES, MAX_MANIFEST_BYTES, path_problem, read_regular
from .records import as_dict, field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Manifest",
    "ModelSource",
    "TargetLibrary",
    "read_manifest_bytes",
]

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
# Counts cross the C ABI as int32_t.
_INT32_MAX = 2**31 - 1
_LOWER_HEX = frozenset("0123456789abcdef")


@record
class ModelSource:
    """The booster file the bundle was compiled from."""

    name: str
    file: str
    sha256: str
    format: str  # "xgboost-json" or "xgboost-ubjson"


@record
class TargetLibrary:
    """One compiled library and how it was built."""

    file: str  # relative to the bundle root, always with "/"
    sha256: str
    size: int
    compiler: str
    compiler_version: str
    flags: tuple[str, ...]
    build_seconds: float
    # How the library was checked against XGBoost at compile time, if it was.
    parity: dict[str, Any] | None = None


@record
class Manifest:
    schema_version: int
    model: ModelSource
    tools: dict[str, str]
    backend: str
    abi_version: int
    objective: str
    postprocessor: str
    num_feature: int
    feature_names: tuple[str, ...] | None
    feature_types: tuple[str, ...] | None
    num_target: int
    num_class: tuple[int, ...]
    num_output: int
    base_score: tuple[float, ...]
    threshold_type: str
    num_tree: int
    targets: dict[str, TargetLibrary] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(as_dict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def read(cls, bundle_dir: str | os.PathLike[str]) -> Manifest:
        """The manifest of ``bundle_dir``, unchecked against SHA256SUMS (see
        ``integrity.read_sealed_manifest`` for the checked one)."""
        path = os.path.join(bundle_dir, MANIFEST_NAME)
        return cls.from_bytes(read_manifest_bytes(bundle_dir), source=path)

    @classmethod
    def from_bytes(cls, raw: bytes, *, source: str = MANIFEST_NAME) -> Manifest:
        return _parse(_Reader(_strict_json(raw, source), source))


def read_manifest_bytes(bundle_dir: str | os.PathLike[str]) -> bytes:
    """manifest.json's bytes: a regular file of at most 1 MiB, read without blocking."""
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    try:
        return read_regular(path, limit=MAX_MANIFEST_BYTES, what="the bundle's manifest")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest; is {bundle_dir} a bundle?") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from exc


class _NotStrictJSON(Exception):
    """Raised by the hooks of _strict_json; becomes a ManifestError naming the file."""


def _strict_json(raw: bytes, source: str) -> Any:
    """JSON without NaN or Infinity, numbers beyond double range, or a key given twice
    (parsers disagree on which of two values counts)."""
    try:
        return json.loads(
            raw,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except _NotStrictJSON as exc:
        raise ManifestError(f"{source}: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{source}: nested too deeply to be a manifest") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of 4,300+ digits
        raise ManifestError(f"{source}: not valid JSON: {exc}") from exc


def _refuse_constant(name: str) -> Any:
    raise _NotStrictJSON(f"{name} is not a number JSON allows, and no manifest value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStrictJSON(f"number {text[:40]} is beyond the range of a double")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _NotStrictJSON(f"key {key[:80]!r} appears twice in one object")
        doc[key] = value
    return doc


class _Reader:
    """Typed access to a JSON object that names the file and key in every error."""

    def __init__(self, doc: Any, source: str, prefix: str = "") -> None:
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: {prefix or 'top level'} must be an object")
        self.doc, self.source, self.prefix = doc, source, prefix

    def _get(self, key: str, types: type | tuple[type, ...], what: str) -> Any:
        where = f"{self.source}: {self.prefix}{key}"
        if key not in self.doc:
            raise ManifestError(f"{where}: missing")
        value = self.doc[key]
        # bool is an int subclass; a manifest never means True where it says a number.
        if isinstance(value, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)
        ):
            raise ManifestError(f"{where}: expected {what}, found {value!r}")
        if not isinstance(value, types):
            raise ManifestError(f"{where}: expected {what}, found {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        return self._get(key, str, "a string")  # type: ignore[no-any-return]

    def integer(self, key: str, minimum: int = 0, maximum: int = _INT32_MAX) -> int:
        value: int = self._get(key, int, "an integer")
        if not minimum <= value <= maximum:
            raise ManifestError(
                f"{self.source}: {self.prefix}{key}: expected an integer from {minimum} to "
                f"{maximum}, found {_short(value)}"
            )
        return value

    def number(self, key: str) -> float:
        return self._finite(key, self._get(key, (int, float), "a number"))

    def _finite(self, key: str, value: int | float) -> float:
        # An int from JSON can be far beyond double range; float() of it raises OverflowError.
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
        if not math.isfinite(result):
            raise ManifestError(
                f"{self.source}: {self.prefix}{key}: expected a finite number, "
                f"found {_short(value)}"
            )
        return result

    def sha256(self, key: str) -> str:
        value = self.text(key)
        if len(value) != 64 or not _LOWER_HEX.issuperset(value):
            raise ManifestError(
                f"{self.source}: {self.prefix}{key}: expected 64 lowercase hex digits, "
                f"found {value[:80]!r}"
            )
        return value

    def relative_path(self, key: str) -> str:
        """A file inside the bundle: the manifest must not point anywhere else."""
        value = self.text(key)
        problem = path_problem(value)
        if problem is not None:
            raise ManifestError(
                f"{self.source}: {self.prefix}{key}: expected a relative path inside the "
                f"bundle, found {value[:200]!r}, which {problem}"
            )
        return value

    def items(self, key: str, item: type, *, optional: bool = False) -> tuple[Any, ...] | None:
        if optional and self.doc.get(key) is None:
            return None
        values = self._get(key, list, "a list")
        for i, value in enumerate(values):
            ok = isinstance(value, item) and not (isinstance(value, bool) and item is not bool)
            if item is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ManifestError(
                    f"{self.source}: {self.prefix}{key}[{i}]: expected {item.__name__}, "
                    f"found {_short(value)}"
                )
            if item is float:
                values[i] = self._finite(f"{key}[{i}]", value)
            elif item is int and not 0 <= value <= _INT32_MAX:
                raise ManifestError(
                    f"{self.source}: {self.prefix}{key}[{i}]: expected an integer from 0 to "
                    f"{_INT32_MAX}, found {_short(value)}"
                )
        return tuple(values)

    def mapping(self, key: str) -> dict[str, Any]:
        return self._get(key, dict, "an object")  # type: ignore[no-any-return]

    def child(self, key: str) -> _Reader:
        return _Reader(self.mapping(key), self.source, f"{self.prefix}{key}.")


def _short(value: Any) -> str:
    """repr of a value from the manifest, cut short: a hostile one can be a megabyte long."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 80 else text[:77] + "..."


def _parse(r: _Reader) -> Manifest:
    version = r.integer("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{r.source}: schema_version {version} is not supported "
            f"(this runtime reads version {SCHEMA_VERSION})"
        )
    m = r.child("model")
    model = ModelSource(m.text("name"), m.text("file"), m.sha256("sha256"), m.text("format"))
    targets = {}
    for triple in r.mapping("targets"):
        t = r.child("targets").child(triple)
        parity = t.doc.get("parity")
        if parity is not None and not isinstance(parity, dict):
            raise ManifestError(f"{r.source}: targets.{triple}.parity: expected an object")
        targets[triple] = TargetLibrary(
            file=t.relative_path("file"),
            sha256=t.sha256("sha256"),
            size=t.integer("size", 1, MAX_LIBRARY_BYTES),
            compiler=t.text("compiler"),
            compiler_version=t.text("compiler_version"),
            flags=t.items("flags", str) or (),
            build_seconds=t.number("build_seconds"),
            parity=parity,
        )
    tools = r.mapping("tools")
    if not all(isinstance(v, str) for v in tools.values()):
        raise ManifestError(f"{r.source}: tools: every version must be a string")
    manifest = Manifest(
        schema_version=version,
        model=model,
        tools=dict(tools),
        backend=r.text("backend"),
        abi_version=r.integer("abi_version", 1),
        objective=r.text("objective"),
        postprocessor=r.text("postprocessor"),
        num_feature=r.integer("num_feature", 1),
        feature_names=r.items("feature_names", str, optional=True),
        feature_types=r.items("feature_types", str, optional=True),
        num_target=r.integer("num_target", 1),
        num_class=r.items("num_class", int) or (),
        num_output=r.integer("num_output", 1),
        base_score=tuple(float(v) for v in r.items("base_score", float) or ()),
        threshold_type=r.text("threshold_type"),
        num_tree=r.integer("num_tree"),
        targets=targets,
    )
    _check_consistency(manifest, r.source)
    return manifest


def _check_consistency(m: Manifest, source: str) -> None:
    problems = []
    if m.feature_names is not None and len(m.feature_names) != m.num_feature:
        problems.append(f"{len(m.feature_names)} feature_names for num_feature {m.num_feature}")
    if m.feature_names is not None and len(set(m.feature_names)) != len(m.feature_names):
        problems.append("feature_names has duplicates")
    if m.feature_types is not None and len(m.feature_types) != m.num_feature:
        problems.append(f"{len(m.feature_types)} feature_types for num_feature {m.num_feature}")
    if len(m.base_score) != m.num_output:
        problems.append(f"{len(m.base_score)} base_score values for num_output {m.num_output}")
    if problems:
        raise ManifestError(f"{source}: inconsistent: " + "; ".join(problems))

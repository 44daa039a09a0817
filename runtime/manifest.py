"""manifest.json: the contract between compile/ (which writes it) and runtime/ (which checks it).

A bundle is a folder::

    manifest.json                 this schema
    SHA256SUMS                    sha256 of manifest.json and of every library (``sha256sum -c``)
    lib/<target>/libmodel.so      one library per target

Only the standard library is used here: the device has no numpy and no jsonschema.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ManifestError

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "Manifest", "ModelSource", "TargetLibrary"]

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class ModelSource:
    """The booster file the bundle was compiled from."""

    name: str
    file: str
    sha256: str
    format: str  # "xgboost-json" or "xgboost-ubjson"


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def read(cls, bundle_dir: str | Path) -> Manifest:
        path = Path(bundle_dir) / MANIFEST_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ManifestError(f"{path}: no manifest; is {bundle_dir} a bundle?") from None
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc}") from exc
        return cls.from_bytes(raw, source=str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, *, source: str = MANIFEST_NAME) -> Manifest:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{source}: not valid JSON: {exc}") from exc
        return _parse(_Reader(doc, source))


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

    def integer(self, key: str, minimum: int = 0) -> int:
        value: int = self._get(key, int, "an integer")
        if value < minimum:
            raise ManifestError(
                f"{self.source}: {self.prefix}{key}: must be >= {minimum}, is {value}"
            )
        return value

    def number(self, key: str) -> float:
        return float(self._get(key, (int, float), "a number"))

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
                    f"found {value!r}"
                )
        return tuple(values)

    def mapping(self, key: str) -> dict[str, Any]:
        return self._get(key, dict, "an object")  # type: ignore[no-any-return]

    def child(self, key: str) -> _Reader:
        return _Reader(self.mapping(key), self.source, f"{self.prefix}{key}.")


def _parse(r: _Reader) -> Manifest:
    version = r.integer("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{r.source}: schema_version {version} is not supported "
            f"(this runtime reads version {SCHEMA_VERSION})"
        )
    m = r.child("model")
    model = ModelSource(m.text("name"), m.text("file"), m.text("sha256"), m.text("format"))
    targets = {}
    for triple in r.mapping("targets"):
        t = r.child("targets").child(triple)
        parity = t.doc.get("parity")
        if parity is not None and not isinstance(parity, dict):
            raise ManifestError(f"{r.source}: targets.{triple}.parity: expected an object")
        targets[triple] = TargetLibrary(
            file=t.text("file"),
            sha256=t.text("sha256"),
            size=t.integer("size"),
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
    for triple, lib in m.targets.items():
        if lib.file.startswith("/") or ".." in lib.file.split("/"):
            problems.append(f"targets.{triple}.file {lib.file!r} leaves the bundle")
    if problems:
        raise ManifestError(f"{source}: inconsistent: " + "; ".join(problems))

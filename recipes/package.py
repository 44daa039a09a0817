"""Package a bundle as a Greengrass component: one zip per platform and one recipe.

Output layout (what ``greengrass-cli deployment create --recipeDir ... --artifactDir ...``
takes; for a cloud deployment, upload the zips and pass --artifact-uri-prefix)::

    greengrass-build/
      recipes/NAME-VERSION.yaml
      artifacts/NAME/VERSION/edgeboost-<target>.zip

Each zip holds the device runtime (``edgeboost/``: runtime, ABI header, CLI) and ``bundle/``
with the manifest and that platform's library only: no compiler, no xgboost, no numpy. Zips
are reproducible: same inputs, same bytes (fixed timestamps and order).
"""

from __future__ import annotations

import copy
import hashlib
import re
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from edgeboost.compile.errors import MissingExtraError, ToolchainError
from edgeboost.compile.runtime_tree import runtime_files
from edgeboost.runtime.integrity import (
    CHECKSUMS_NAME,
    format_checksums,
    read_checksums,
    verify_file,
)
from edgeboost.runtime.manifest import MANIFEST_NAME, Manifest
from edgeboost.runtime.model import Model
from edgeboost.runtime.targets import TARGETS, host_target

__all__ = ["MAX_RECIPE_BYTES", "ComponentOptions", "Package", "package_bundle"]

# Greengrass refuses recipes larger than this.
MAX_RECIPE_BYTES = 16_000
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_TOPIC = re.compile(r"^[^#+*\s]{1,256}$")


@dataclass(frozen=True)
class ComponentOptions:
    name: str
    version: str
    publisher: str = "edgeboost"
    description: str | None = None
    request_topic: str = "edgeboost/inference/request"
    response_topic: str = "edgeboost/inference/response"
    legacy_request_topic: str = "local/inference"
    legacy_response_topic: str = "local/result"
    # Where the zips will live for a cloud deployment; greengrass-cli ignores the prefix.
    artifact_uri_prefix: str = "s3://REPLACE-WITH-YOUR-BUCKET"

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ToolchainError(f"component name {self.name!r} must match {_NAME.pattern}")
        if not _VERSION.match(self.version):
            raise ToolchainError(f"component version {self.version!r} is not semantic (1.0.0)")
        for label in (
            "request_topic",
            "response_topic",
            "legacy_request_topic",
            "legacy_response_topic",
        ):
            topic = getattr(self, label)
            if not _TOPIC.match(topic):
                raise ToolchainError(f"{label} {topic!r}: exact topics only (no +, #, * or spaces)")


@dataclass(frozen=True)
class Package:
    recipe: Path
    zips: dict[str, Path]


def package_bundle(bundle: str | Path, output: str | Path, options: ComponentOptions) -> Package:
    """Write the recipe and one zip per target of ``bundle`` under ``output``."""
    options.validate()
    bundle, output = Path(bundle), Path(output)
    manifest = _verified_manifest(bundle)
    artifacts = output / "artifacts" / options.name / options.version
    artifacts.mkdir(parents=True, exist_ok=True)
    zips = {}
    manifests = []
    for triple in manifest.targets:
        folder = f"edgeboost-{triple}"
        zips[triple] = _write_zip(artifacts / f"{folder}.zip", bundle, manifest, triple)
        manifests.append(_platform_manifest(options, triple, folder))
    recipe_path = output / "recipes" / f"{options.name}-{options.version}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    text = _recipe_text(options, manifest, manifests)
    if len(text.encode()) > MAX_RECIPE_BYTES:
        raise ToolchainError(
            f"recipe is {len(text.encode())} bytes; Greengrass allows {MAX_RECIPE_BYTES}"
        )
    recipe_path.write_text(text)
    return Package(recipe_path, zips)


def _verified_manifest(bundle: Path) -> Manifest:
    """Never package a bundle that does not verify: hashes of everything, and the host
    library's own metadata when the bundle has one (foreign ones cannot be loaded here)."""
    sums = read_checksums(bundle)
    if MANIFEST_NAME not in sums:
        raise ToolchainError(f"{bundle / CHECKSUMS_NAME}: does not list {MANIFEST_NAME}")
    verify_file(bundle, MANIFEST_NAME, sums[MANIFEST_NAME], recorded_in=CHECKSUMS_NAME)
    manifest = Manifest.read(bundle)
    if not manifest.targets:
        raise ToolchainError(f"{bundle}: the bundle has no libraries")
    for library in manifest.targets.values():
        verify_file(bundle, library.file, library.sha256, recorded_in=MANIFEST_NAME)
    try:
        host = host_target()
    except LookupError:
        host = None
    if host in manifest.targets:
        Model.load(bundle, target=host)
    return manifest


def _write_zip(path: Path, bundle: Path, manifest: Manifest, triple: str) -> Path:
    library = manifest.targets[triple]
    manifest_bytes = (bundle / MANIFEST_NAME).read_bytes()
    sums = {MANIFEST_NAME: _sha256(manifest_bytes), library.file: library.sha256}
    entries: list[tuple[str, bytes]] = [
        (name, source.read_bytes()) for name, source in runtime_files().items()
    ]
    entries += [
        (f"bundle/{MANIFEST_NAME}", manifest_bytes),
        (f"bundle/{CHECKSUMS_NAME}", format_checksums(sums).encode()),
        (f"bundle/{library.file}", (bundle / library.file).read_bytes()),
    ]
    # Greengrass unpacks into a folder named after the zip; entries live at the top level.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _template(name: str) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise MissingExtraError("packaging needs PyYAML: pip install 'edgeboost[compile]'") from exc
    return yaml.safe_load(resources.files("edgeboost.recipes").joinpath(name).read_text())


def _fill(node: Any, values: dict[str, str]) -> Any:
    """Substitute ${...} in every string (keys too) of a parsed template."""
    if isinstance(node, str):
        return Template(node).substitute(values)
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, dict):
        return {_fill(key, values): _fill(value, values) for key, value in node.items()}
    return node


def _platform_manifest(options: ComponentOptions, triple: str, folder: str) -> Any:
    target = TARGETS[triple]
    uri = f"{options.artifact_uri_prefix.rstrip('/')}/{options.name}/{options.version}/{folder}.zip"
    manifest = _fill(
        _template("manifest.yaml"),
        {"architecture": target.greengrass_architecture, "folder": folder, "artifact_uri": uri},
    )
    if target.greengrass_architecture_detail:
        manifest["Platform"]["architecture.detail"] = target.greengrass_architecture_detail
    return manifest


def _recipe_dumper() -> Any:
    import yaml

    class RecipeDumper(yaml.SafeDumper):
        """Scripts (multi-line strings) as literal blocks, so the recipe reads like the template."""

    def text(dumper: yaml.SafeDumper, data: str) -> Any:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    RecipeDumper.add_representer(str, text)
    return RecipeDumper


def _recipe_text(options: ComponentOptions, manifest: Manifest, manifests: list[Any]) -> str:
    import yaml

    description = options.description or (
        f"{manifest.model.name} ({manifest.objective}, {manifest.num_tree} trees, "
        f"model sha256 {manifest.model.sha256[:12]}) served by edgeboost"
    )
    values = {
        "name": options.name,
        "version": options.version,
        "publisher": options.publisher,
        "description": description,
        "request_topic": options.request_topic,
        "response_topic": options.response_topic,
        "legacy_request_topic": options.legacy_request_topic,
        "legacy_response_topic": options.legacy_response_topic,
    }
    recipe = _fill(_template("inference.yaml"), values)
    recipe["Manifests"] = copy.deepcopy(manifests)
    header = "# Generated by edgeboost package. Edit the component configuration, not this file.\n"
    return header + yaml.dump(recipe, Dumper=_recipe_dumper(), sort_keys=False, width=100)

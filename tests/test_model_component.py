"""The model component on a device, unpacked the way the Java Nucleus unpacks it.

How the Nucleus unpacks a zip, read in aws-greengrass-nucleus (src/main/java/com/aws/greengrass/):
- componentmanager/ComponentManager.java, prepareArtifacts: a zip artifact with Unarchive: ZIP
  goes to NucleusPaths.unarchiveArtifactPath(component, getFileName(zip)): the component's
  {artifacts:decompressedPath} (util/NucleusPaths.java: <root>/packages/artifacts-unarchived/
  <name>/<version>), then the zip's file name less its last extension.
- componentmanager/Unarchiver.java, unzip: every entry in turn; a file is written only "when
  the destination file doesn't exist or the file sizes don't match". A folder that already
  holds a file of the same size keeps the old bytes.

So redeploying a changed model into the folder of an earlier one can leave the old library
beside the new manifest. edgeboost names each model zip after the sha256 of its SHA256SUMS
(bundle-<16 hex>.zip): a different model unpacks into a different folder.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeboost.recipes import ComponentOptions, Package, package_bundle
from edgeboost.runtime import IntegrityError, Model
from edgeboost.runtime.targets import host_target

from .zoo import train

NAME = "com.example.Sensors"
MODEL = f"{NAME}.Model"
ROWS = [[0.1, -0.2, 0.3, None, 0.5, -0.6], [1, 2, 3, 4, 5, 6]]


def nucleus_unzip(zip_path: Path, destination: Path) -> None:
    """Unarchiver.unzip, re-implemented: the entries in the zip's order; an entry that would
    land outside ``destination`` is an error (safeNewZipFile); a folder entry is made; a file
    entry is written only if no file is there or the file's size differs from the entry's."""
    with zipfile.ZipFile(zip_path) as archive:
        for entry in archive.infolist():
            target = destination / entry.filename
            if not target.resolve().is_relative_to(destination.resolve()):
                raise OSError(f"Entry is outside of the target dir: {entry.filename}")
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.stat().st_size != entry.file_size:
                target.write_bytes(archive.read(entry))


def nucleus_deploy(root: Path, component: str, version: str, zip_path: Path) -> Path:
    """ComponentManager.prepareArtifacts for one zip: where it unpacks (getFileName drops the
    last extension when the name has a dot after its first character), then the unzip."""
    name = zip_path.name
    folder = name[: name.rindex(".")] if name.find(".") > 0 else name
    destination = decompressed_path(root, component, version) / folder
    destination.mkdir(parents=True, exist_ok=True)
    nucleus_unzip(zip_path, destination)
    return destination


def decompressed_path(root: Path, component: str, version: str) -> Path:
    """{artifacts:decompressedPath} of a component version (NucleusPaths.unarchiveArtifactPath)."""
    return root / "packages" / "artifacts-unarchived" / component / version


def java_interpolate(
    script: str, recipe: dict[str, Any], root: Path, versions: dict[str, str]
) -> str:
    """KernelConfigResolver.replace, for {<component>:artifacts:decompressedPath} only: filled
    in when the component is a direct dependency of ``recipe`` (HARD or SOFT alike), with the
    version the deployment resolved for it; otherwise left as it is (and logged)."""
    dependencies = set(recipe.get("ComponentDependencies") or {})

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in dependencies:
            return match.group(0)
        return str(decompressed_path(root, name, versions[name]))

    return re.sub(r"\{([.\w-]+):artifacts:decompressedPath\}", fill, script)


def test_the_unzip_rule_keeps_a_changed_file_of_the_same_size(tmp_path: Path) -> None:
    """The re-implemented rule, on its own: same size kept, other size rewritten."""
    for number, text in enumerate(("old!", "new!", "newer")):
        with zipfile.ZipFile(tmp_path / f"{number}.zip", "w") as archive:
            archive.writestr("lib/file", text)
    folder = tmp_path / "unpacked"
    nucleus_unzip(tmp_path / "0.zip", folder)
    nucleus_unzip(tmp_path / "1.zip", folder)
    assert (folder / "lib" / "file").read_text() == "old!"
    nucleus_unzip(tmp_path / "2.zip", folder)
    assert (folder / "lib" / "file").read_text() == "newer"
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../outside", "x")
    with pytest.raises(OSError, match="outside of the target dir"):
        nucleus_unzip(tmp_path / "evil.zip", folder)


@pytest.fixture(scope="module")
def same_size_bundles(
    tmp_path_factory: pytest.TempPathFactory, compile_once: Callable[..., Path]
) -> tuple[Path, Path]:
    """Model A, and model B: the same trees with every leaf value doubled (exact in float32),
    so the same tables and code, a library of the same size, and other predictions."""
    folder = tmp_path_factory.mktemp("same-size")
    model_a = train("reg_squarederror", folder)
    document = json.loads(model_a.read_text())
    for tree in document["learner"]["gradient_booster"]["model"]["trees"]:
        for node, left in enumerate(tree["left_children"]):
            if left == -1:  # a leaf: its value is in split_conditions (and base_weights)
                tree["split_conditions"][node] *= 2
                tree["base_weights"][node] *= 2
    (folder / "b").mkdir()
    model_b = folder / "b" / "model-b.json"
    model_b.write_text(json.dumps(document))
    return compile_once(model_a, "same-size-a"), compile_once(model_b, "same-size-b")


def _library(bundle: Path) -> Path:
    return bundle / "lib" / host_target() / "libmodel.so"


def _model_component(bundle: Path, output: Path, version: str) -> Package:
    options = ComponentOptions(name=NAME, version="1.0.0", model_version=version)
    return package_bundle(bundle, output, options, only="model")


def _bundle_config(package: Package) -> dict[str, Any]:
    assert package.model is not None
    recipe = yaml.safe_load(package.model.recipe.read_text())
    return recipe["ComponentConfiguration"]["DefaultConfiguration"]["Bundle"]  # type: ignore[no-any-return]


def test_the_premise_two_models_with_libraries_of_the_same_size(
    same_size_bundles: tuple[Path, Path],
) -> None:
    bundle_a, bundle_b = same_size_bundles
    assert _library(bundle_a).stat().st_size == _library(bundle_b).stat().st_size
    assert _library(bundle_a).read_bytes() != _library(bundle_b).read_bytes()
    assert Model.load(bundle_a).predict(ROWS) != Model.load(bundle_b).predict(ROWS)


def test_one_folder_for_both_models_mixes_them(
    same_size_bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    """The layout before the model component: a zip named after its platform only, so model
    B redeployed as the same version unpacks over model A. The manifest (another size) is
    rewritten; SHA256SUMS (the same size: same names, fixed-width hashes) and the library
    (the same size) are A's. Model.load refuses the mix: it serves neither model."""
    bundle_a, bundle_b = same_size_bundles
    root, triple = tmp_path / "greengrass", host_target()
    for bundle, label in ((bundle_a, "a"), (bundle_b, "b")):
        package = _model_component(bundle, tmp_path / label, "1.0.0")
        assert package.model is not None
        platform_named = tmp_path / label / f"edgeboost-{triple}.zip"
        shutil.copyfile(package.model.zips[triple], platform_named)
        folder = nucleus_deploy(root, MODEL, "1.0.0", platform_named)
    manifest_a, manifest_b = (b / "manifest.json" for b in (bundle_a, bundle_b))
    assert manifest_a.stat().st_size != manifest_b.stat().st_size
    assert (folder / "manifest.json").read_bytes() == manifest_b.read_bytes()
    assert (folder / "lib" / triple / "libmodel.so").read_bytes() == _library(bundle_a).read_bytes()
    with pytest.raises(IntegrityError, match="manifest.json"):
        Model.load(folder)


@pytest.mark.parametrize("version_b", ["1.0.0", "1.0.1"], ids=["same-version", "new-version"])
def test_folders_named_after_their_content_never_mix(
    same_size_bundles: tuple[Path, Path], tmp_path: Path, version_b: str
) -> None:
    """Model A as 1.0.0, then model B as the same version again (the failing redeploy) or as
    1.0.1: each unpacks into its own bundle-<hex> folder, which verifies and predicts its own
    model's values; the folder each configuration names is where its zip went."""
    bundle_a, bundle_b = same_size_bundles
    root, triple = tmp_path / "greengrass", host_target()
    for bundle, label, version in ((bundle_a, "a", "1.0.0"), (bundle_b, "b", version_b)):
        package = _model_component(bundle, tmp_path / label, version)
        assert package.model is not None
        folder = nucleus_deploy(root, MODEL, version, package.model.zips[triple])
        config = _bundle_config(package)
        assert config["Version"] == version
        assert folder == decompressed_path(root, MODEL, version) / config["Folders"][triple]
    folders = sorted(decompressed_path(root, MODEL, "1.0.0").parent.glob("*/bundle-*"))
    assert len(folders) == 2
    by_library = {_library(folder).read_bytes(): folder for folder in folders}
    for bundle in (bundle_a, bundle_b):
        folder = by_library[_library(bundle).read_bytes()]
        assert Model.load(folder).predict(ROWS) == Model.load(bundle).predict(ROWS)


def test_the_run_command_finds_the_bundle_the_nucleus_unpacked(
    same_size_bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    """The inference component's Run names the model component's folder of versions,
    {kernel:rootPath}/packages/artifacts-unarchived/NAME.Model, with no version in it; the
    server's rule, <--model-path>/<Bundle.Version>/<Bundle.Folders[target]>, lands on the
    folder the model zip was unpacked into. A Run that named the version would change with
    every model and make the Java Nucleus restart the server."""
    root, triple = tmp_path / "greengrass", host_target()
    runs = []
    for version in ("1.3.0", "1.4.0"):
        options = ComponentOptions(name=NAME, version="1.0.0", model_version=version)
        package = package_bundle(same_size_bundles[0], tmp_path / version, options)
        assert package.runtime is not None and package.model is not None
        unpacked = nucleus_deploy(root, MODEL, version, package.model.zips[triple])
        recipe = yaml.safe_load(package.runtime.recipe.read_text())
        (run,) = (
            m["Lifecycle"]["Run"]["Script"]
            for m in recipe["Manifests"]
            if m["Artifacts"][0]["Uri"].endswith(f"edgeboost-runtime-{triple}.zip")
        )
        runs.append(run)
        filled = run.replace("{kernel:rootPath}", str(root))
        (model_path,) = re.findall(r"--model-path (\S+)", filled)
        config = _bundle_config(package)
        found = Path(model_path) / config["Version"] / config["Folders"][triple]
        assert found.resolve() == unpacked.resolve()
        assert Model.load(found).predict(ROWS) == Model.load(same_size_bundles[0]).predict(ROWS)
    assert runs[0] == runs[1]  # a new model version leaves the server's Run as it was

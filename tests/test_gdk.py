"""`edgeboost package --gdk`: GDK CLI projects that `gdk component build` and
`gdk component publish` take as they are.

What the GDK CLI reads, re-implemented from aws-greengrass-gdk-cli (gdk/):
- common/config/GDKProject.py: gdk-config.json in the project folder; the component is the
  first (static/config_schema.json: the only) key of "component"; the recipe is recipe.json
  or recipe.yaml there, never both; the build folder greengrass-build/, its artifacts
  greengrass-build/artifacts/<name>/<version as written in gdk-config.json>/.
- static/config_schema.json: gdk_version and component required; a component needs author,
  version (semver or NEXT_PATCH), build (build_system; "custom" needs custom_build_command)
  and publish (bucket).
- commands/component/BuildCommand.py: build empties greengrass-build, makes recipes/ and the
  artifacts folder, then runs custom_build_command as is (a list, no shell) in the project
  folder.
- commands/component/PublishCommand.py, transformer/PublishRecipeTransformer.py: publish
  uploads every file of the artifacts folder to <name>/<version>/<file>, reads
  greengrass-build/recipes/<the project recipe's file name>, which must name the component,
  sets each s3:// Uri whose file name is one file of the artifacts folder to the upload (a
  warning for any other), and refuses a recipe over 16,000 bytes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeboost.cli import main
from edgeboost.recipes import MAX_RECIPE_BYTES

from .conftest import SHIPPED_MODEL

NAME, VERSION = "com.example.WineQuality", "1.0.0"
MODEL = f"{NAME}.Model"
SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


def gdk_project(project: Path) -> dict[str, Any]:
    """GDKProject and the config schema: the component, its version, recipe and folders."""
    config = json.loads((project / "gdk-config.json").read_text())
    assert set(config) >= {"gdk_version", "component"}
    assert SEMVER.match(config["gdk_version"])
    (name,) = config["component"]
    component = config["component"][name]
    assert set(component) >= {"author", "version", "build", "publish"}
    assert SEMVER.match(component["version"]) or component["version"] == "NEXT_PATCH"
    assert "bucket" in component["publish"]
    build = component["build"]
    assert build["build_system"] == "custom" and build["custom_build_command"]
    recipes = [p for p in (project / "recipe.json", project / "recipe.yaml") if p.exists()]
    assert len(recipes) == 1, recipes
    build_folder = project / "greengrass-build"
    return {
        "name": name,
        "version": component["version"],
        "command": build["custom_build_command"],
        "recipe": recipes[0],
        "build": build_folder,
        "artifacts": build_folder / "artifacts" / name / component["version"],
    }


def gdk_build(project: Path) -> None:
    """BuildCommand with build_system "custom"."""
    gdk = gdk_project(project)
    shutil.rmtree(gdk["build"], ignore_errors=True)
    (gdk["build"] / "recipes").mkdir(parents=True)
    gdk["artifacts"].mkdir(parents=True)
    subprocess.run(gdk["command"], cwd=project, check=True, capture_output=True)


def gdk_publish(project: Path, bucket: str) -> tuple[list[str], dict[str, Any]]:
    """PublishCommand and PublishRecipeTransformer, without AWS: the S3 keys uploaded and the
    recipe that would create the component version."""
    gdk = gdk_project(project)
    name, version, artifacts = gdk["name"], gdk["version"], gdk["artifacts"]
    uploads = sorted(f"{name}/{version}/{p.name}" for p in artifacts.iterdir())
    recipe = yaml.safe_load((gdk["build"] / "recipes" / gdk["recipe"].name).read_text())
    assert recipe["ComponentName"] == name, "Failed to publish the component: not built"
    recipe["ComponentVersion"] = version
    for manifest in recipe["Manifests"]:
        for artifact in manifest.get("Artifacts", []):
            if not artifact["Uri"].startswith("s3://"):
                continue
            file_name = Path(artifact["Uri"]).name
            matches = list(artifacts.glob(file_name))
            assert len(matches) == 1, f"{file_name} is not in {artifacts}"
            artifact["Uri"] = f"s3://{bucket}/{name}/{version}/{file_name}"
    assert len(yaml.dump(recipe).encode()) <= MAX_RECIPE_BYTES
    return uploads, recipe


@pytest.fixture(scope="module")
def bundle(compile_once: Callable[..., Path]) -> Path:
    return compile_once(SHIPPED_MODEL, "gdk-wine-quality")


def _package(bundle: Path, output: Path, *args: str) -> None:
    argv = ["package", str(bundle), "-o", str(output), "--name", NAME, "--version", VERSION]
    assert main([*argv, "--gdk", *args]) == 0


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_each_component_is_a_gdk_project_build_and_publish_take(
    bundle: Path, tmp_path: Path
) -> None:
    _package(bundle, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME, MODEL]
    for name in (NAME, MODEL):
        project = tmp_path / name
        gdk = gdk_project(project)
        assert (gdk["name"], gdk["version"], gdk["recipe"].name) == (name, VERSION, "recipe.yaml")
        built_recipe = gdk["build"] / "recipes" / "recipe.yaml"
        assert gdk["recipe"].read_bytes() == built_recipe.read_bytes()
        written = _tree(project)
        # `gdk component build`: greengrass-build emptied, then edgeboost writes it again,
        # byte for byte, and touches no other project.
        other = _tree(tmp_path / (MODEL if name == NAME else NAME))
        gdk_build(project)
        assert _tree(project) == written
        assert _tree(tmp_path / (MODEL if name == NAME else NAME)) == other
        # `gdk component publish`: every artifact the recipe names is uploaded, nothing else.
        bucket = "my-bucket-eu-west-1-123456789012"
        uploads, recipe = gdk_publish(project, bucket)
        uris = [a["Uri"] for m in recipe["Manifests"] for a in m["Artifacts"]]
        assert sorted(uri.removeprefix(f"s3://{bucket}/") for uri in uris) == uploads
        assert len(uploads) == len(recipe["Manifests"])  # one zip per platform


def test_a_new_model_version_keeps_the_publish_settings(bundle: Path, tmp_path: Path) -> None:
    """gdk-config.json's version and build are edgeboost's (Bundle.Version and the runtime's
    dependency need the version before publish: no NEXT_PATCH); bucket and region are the
    user's and survive the next `edgeboost package`."""
    _package(bundle, tmp_path)
    config_path = tmp_path / MODEL / "gdk-config.json"
    config = json.loads(config_path.read_text())
    config["component"][MODEL]["publish"] = {"bucket": "models", "region": "eu-west-1"}
    config["component"][MODEL]["version"] = "NEXT_PATCH"
    config_path.write_text(json.dumps(config))
    runtime_before = _tree(tmp_path / NAME)
    _package(bundle, tmp_path, "--model-only", "--model-version", "1.0.1")
    assert _tree(tmp_path / NAME) == runtime_before
    gdk = gdk_project(tmp_path / MODEL)
    component = json.loads(config_path.read_text())["component"][MODEL]
    assert component["publish"] == {"bucket": "models", "region": "eu-west-1"}
    assert gdk["version"] == "1.0.1" and "1.0.1" in gdk["command"]
    recipe = yaml.safe_load(gdk["recipe"].read_text())
    bundle_config = recipe["ComponentConfiguration"]["DefaultConfiguration"]["Bundle"]
    assert (recipe["ComponentVersion"], bundle_config["Version"]) == ("1.0.1", "1.0.1")
    uploads, _ = gdk_publish(tmp_path / MODEL, "models-eu-west-1-123456789012")
    assert all(key.startswith(f"{MODEL}/1.0.1/bundle-") for key in uploads)

"""Greengrass packaging: the recipes' shape (model component and inference component), the zips'
contents, and that a runtime zip and a model zip alone predict."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeboost.cli import main
from edgeboost.compile.errors import PackagingError
from edgeboost.compile.runtime_tree import runtime_files
from edgeboost.recipes import (
    MAX_RECIPE_BYTES,
    ComponentOptions,
    install_on_this_machine,
    package_bundle,
)
from edgeboost.runtime import IntegrityError, Model
from edgeboost.runtime.targets import (
    MIN_PYTHON,
    TARGET_ENV_VAR,
    TARGETS,
    host_target,
    target_mismatch,
)

from .conftest import REPO, SHIPPED_MODEL, need
from .zoo import train

NAME, VERSION = "com.example.Sensors", "1.2.3"
MODEL = f"{NAME}.Model"
OPTIONS = ComponentOptions(
    name=NAME,
    version=VERSION,
    request_topic="sensors/predict",
    response_topic="sensors/prediction",
)


@pytest.fixture(scope="session")
def all_target_bundle(
    tmp_path_factory: pytest.TempPathFactory, compile_once: Callable[..., Path]
) -> Path:
    need(shutil.which("aarch64-linux-gnu-gcc") is not None, "aarch64-linux-gnu-gcc")
    need(shutil.which("arm-linux-gnueabihf-gcc") is not None, "arm-linux-gnueabihf-gcc")
    model = train("binary_logistic", tmp_path_factory.mktemp("pkg-model"))
    return compile_once(model, "pkg-binary-logistic", ("all",))


@pytest.fixture(scope="session")
def packaged(all_target_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("greengrass-build")
    package_bundle(
        all_target_bundle,
        output,
        OPTIONS,
        consumer_requests=SHIPPED_MODEL.parent / "requests.json",
    )
    return output


def _recipe(output: Path, name: str = NAME) -> dict[str, Any]:
    path = output / "recipes" / f"{name}-{VERSION}.yaml"
    assert path.stat().st_size < MAX_RECIPE_BYTES
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


# How each Nucleus picks the manifest of a recipe, re-implemented from its source so the tests
# can ask "which zip does this device get?". Both take the FIRST manifest that matches.


def java_select(platform: dict[str, str], manifests: list[Any]) -> Any:
    """The Java Nucleus: PlatformHelper.findBestMatch / isAttributeSatisfied
    (aws-greengrass-component-common, called from PlatformResolver.findBestMatch when
    RecipeLoader.loadFromFile reads the recipe). Every key of the manifest's Platform must hold
    for the device's platform: "*" always (even for a key the device does not report, such as
    runtime), otherwise a missing device value never; /regex/ as a full match; "all"/"any" for
    os and architecture; otherwise equality."""

    def holds(key: str, template: str) -> bool:
        label = platform.get(key)
        if template == "*":
            return True
        if not label:
            return False
        if len(template) >= 2 and template[0] == template[-1] == "/":
            return re.fullmatch(template[1:-1], label) is not None
        if key in ("os", "architecture") and template in ("all", "any"):
            return True
        return template[:1].isalnum() and template == label

    return next(
        (m for m in manifests if all(holds(k, v) for k, v in (m["Platform"] or {}).items())),
        None,
    )


def lite_select(architecture: str, manifests: list[Any]) -> Any:
    """Nucleus lite 2.6.0: manifest_selection in modules/ggl-recipe/src/recipe.c, tried on
    each manifest in order by select_linux_manifest (artifacts) and select_linux_lifecycle.
    A manifest counts only if its Platform has runtime "*" or "aws_nucleus_lite" (no runtime
    means Java Nucleus only), os "linux", "*" or "all", architecture absent, "*" or the one
    nucleus lite was compiled for (get_current_architecture: amd64, aarch64 or arm), and a
    non-empty Lifecycle. architecture.detail is never read there."""
    for manifest in manifests:
        platform = manifest["Platform"]
        if platform.get("runtime") not in ("*", "aws_nucleus_lite"):
            continue
        if platform.get("os") not in ("linux", "*", "all"):
            continue
        if platform.get("architecture") in (None, "", "*", architecture) and manifest.get(
            "Lifecycle"
        ):
            return manifest
    return None


PLATFORMS = [
    {"os": "linux", "runtime": "*", "architecture": "amd64"},
    {"os": "linux", "runtime": "*", "architecture": "aarch64"},
    {"os": "linux", "runtime": "*", "architecture": "arm"},
]


def test_recipe_has_one_manifest_per_target(packaged: Path) -> None:
    recipe = _recipe(packaged)
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert (recipe["ComponentName"], recipe["ComponentVersion"]) == (NAME, VERSION)
    assert [m["Platform"] for m in recipe["Manifests"]] == PLATFORMS
    # SOFT: a new model version must not restart the server; any 1.x model fits this runtime.
    assert recipe["ComponentDependencies"] == {
        MODEL: {"VersionRequirement": ">=1.0.0 <2.0.0", "DependencyType": "SOFT"}
    }
    artifacts = packaged / "artifacts" / NAME / VERSION
    for manifest, triple in zip(recipe["Manifests"], TARGETS, strict=True):
        (artifact,) = manifest["Artifacts"]
        zip_name = f"edgeboost-runtime-{triple}.zip"
        assert artifact["Uri"].endswith(f"/{NAME}/{VERSION}/{zip_name}")
        assert artifact["Unarchive"] == "ZIP"
        assert (artifacts / zip_name).is_file()
        run = manifest["Lifecycle"]["Run"]["Script"]
        assert f"PYTHONPATH={{artifacts:decompressedPath}}/edgeboost-runtime-{triple} " in run
        assert (
            f"python3 -u -m edgeboost serve --model-component {MODEL} \\\n"
            f"  --model-path {{kernel:rootPath}}/packages/artifacts-unarchived/{MODEL} \\\n"
        ) in run
        assert "{configuration:/RequestTopic}" in run
        assert "--max-update-defer {configuration:/MaxUpdateDeferSeconds}" in run
        install = manifest["Lifecycle"]["Install"]["Script"]
        assert "import cffi" in install
        # Self-contained: nothing is installed, nothing fetched.
        assert "pip" not in install + run and "awsiot" not in install + run
        assert manifest["Lifecycle"]["Install"]["Timeout"] <= 60
        assert "numpy" not in install + run and "xgboost" not in install + run


def java_platform(os_arch: str, uname_m: str) -> dict[str, str]:
    """What the Java Nucleus reports (PlatformResolver.getArchInfo / getArchDetailInfo):
    architecture from the JVM's os.arch (amd64, aarch64, anything containing "arm" is arm);
    architecture.detail from `uname -m`, asked only by an arm or aarch64 JVM and kept only if
    it is armv6l, armv7l, armv8l or a big-endian twin. A 32-bit process on an arm64 kernel
    reads "aarch64" there (armv8l only under linux32: Linux kernel/sys.c,
    override_architecture), so a 32-bit userland on a 64-bit kernel reports no detail."""
    if os_arch in ("x86_64", "amd64"):
        architecture = "amd64"
    elif "arm" in os_arch:
        architecture = "arm"
    elif os_arch == "aarch64":
        architecture = "aarch64"
    else:
        architecture = "unknown"
    platform = {"os": "linux", "architecture": architecture}
    details = ("armv6l", "armv7l", "armv8l", "armv6b", "armv7b", "armv8b")
    if architecture in ("arm", "aarch64") and uname_m in details:
        platform["architecture.detail"] = uname_m
    return platform


@dataclass(frozen=True)
class Device:
    jvm: str  # the JVM's os.arch (the Java Nucleus's architecture)
    uname: str  # `uname -m` as a process of the device's userland reads it
    lite: str  # what nucleus lite was compiled for (get_current_architecture)
    python: tuple[str, int]  # python3's platform.machine() and pointer bits
    zip: str  # the zip both Nuclei must pick
    runs: bool  # whether Install accepts that zip


ARMV7 = "armv7-linux-gnueabihf"
DEVICES = [
    pytest.param(
        Device("amd64", "x86_64", "amd64", ("x86_64", 64), "x86_64-linux-gnu", True), id="x86_64"
    ),
    pytest.param(
        Device("aarch64", "aarch64", "aarch64", ("aarch64", 64), "aarch64-linux-gnu", True),
        id="64-bit-userland",
    ),
    # Raspberry Pi OS 32-bit since 2023: 64-bit kernel, armhf JVM, nucleus lite and python3.
    pytest.param(
        Device("arm", "aarch64", "arm", ("aarch64", 32), ARMV7, True),
        id="32-bit-userland-on-64-bit-kernel",
    ),
    pytest.param(
        Device("arm", "armv8l", "arm", ("armv8l", 32), ARMV7, True),
        id="32-bit-userland-under-linux32",
    ),
    pytest.param(Device("arm", "armv7l", "arm", ("armv7l", 32), ARMV7, True), id="armv7l-kernel"),
    # Pi Zero / Pi 1: reports arm like any 32-bit board; the ARMv7 library cannot run there.
    pytest.param(Device("arm", "armv6l", "arm", ("armv6l", 32), ARMV7, False), id="armv6l"),
    # A 64-bit Nucleus beside a 32-bit python3 gets the aarch64 zip, which python3 cannot load.
    pytest.param(
        Device("aarch64", "aarch64", "aarch64", ("aarch64", 32), "aarch64-linux-gnu", False),
        id="64-bit-nucleus-32-bit-python3",
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_each_device_gets_the_zip_its_python3_loads(
    packaged: Path, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TARGET_ENV_VAR, raising=False)
    manifests = _recipe(packaged)["Manifests"]
    java = java_platform(device.jvm, device.uname)
    for chosen in (
        [java_select(java, order) for order in (manifests, manifests[::-1])],
        [lite_select(device.lite, order) for order in (manifests, manifests[::-1])],
    ):
        # The same manifest in either order: exactly one matches, so "first match" is moot.
        assert chosen[0] is not None and chosen[0] is chosen[1]
        (artifact,) = chosen[0]["Artifacts"]
        assert artifact["Uri"].endswith(f"/edgeboost-runtime-{device.zip}.zip")
        assert f"m('{device.zip}')" in chosen[0]["Lifecycle"]["Install"]["Script"]
    problem = target_mismatch(device.zip, *device.python)
    assert (problem is None) == device.runs, problem
    # The model component: the same platform, so the same target's bundle, and the folder
    # its configuration names for that target.
    model = _recipe(packaged, MODEL)
    folders = model["ComponentConfiguration"]["DefaultConfiguration"]["Bundle"]["Folders"]
    chosen = [java_select(java, order) for order in (model["Manifests"], model["Manifests"][::-1])]
    assert chosen[0] is not None and chosen[0] is chosen[1]
    (artifact,) = chosen[0]["Artifacts"]
    assert artifact["Uri"].endswith(f"/{MODEL}/{VERSION}/{folders[device.zip]}.zip")
    consumer = _recipe(packaged, f"{NAME}.Consumer")["Manifests"]
    assert java_select(java, consumer) is lite_select(device.lite, consumer) is consumer[0]


def test_a_zip_python3_cannot_load_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TARGET_ENV_VAR, raising=False)
    assert target_mismatch(ARMV7, "armv6l", 32) == (
        f"edgeboost-runtime-{ARMV7}.zip cannot run here: no edgeboost target for machine 'armv6l' "
        f"(32-bit); known targets: {sorted(TARGETS)}"
    )
    message = target_mismatch("aarch64-linux-gnu", "aarch64", 32)
    assert message is not None and "\n" not in message
    assert message.startswith(
        "edgeboost-runtime-aarch64-linux-gnu.zip cannot run here: "
        f"this python3 loads {ARMV7} libraries"
    )


def _run_install(output: Path, triple: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the Install script of ``triple``'s manifest as a Nucleus would (sh -c, after
    unpacking the zip), with this interpreter as python3."""
    folder = f"edgeboost-runtime-{triple}"
    artifacts, work = tmp_path / "artifacts", tmp_path / "work"
    with zipfile.ZipFile(output / "artifacts" / NAME / VERSION / f"{folder}.zip") as z:
        z.extractall(artifacts / folder)
    work.mkdir()
    recipe = output / "recipes" / f"{NAME}-{VERSION}.yaml"
    return install_on_this_machine(recipe, artifacts / folder, work, triple, sys.executable)


def test_install_accepts_the_host_zip(packaged: Path, tmp_path: Path) -> None:
    result = _run_install(packaged, host_target(), tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    # The runtime's bytecode goes to the work folder: the artifacts are read-only on a device.
    compiled = list((tmp_path / "work" / "pycache").rglob("*.pyc"))
    assert any(p.name.startswith("server.") for p in compiled), compiled
    assert not list((tmp_path / "artifacts").rglob("__pycache__"))


def test_install_refuses_a_zip_python3_cannot_load(packaged: Path, tmp_path: Path) -> None:
    other = next(triple for triple in TARGETS if triple != host_target())
    result = _run_install(packaged, other, tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"{target_mismatch(other)}\n"


def test_device_and_host_minimum_pythons() -> None:
    """Two minimums: the device's (MIN_PYTHON, which Install checks: Debian 11's 3.9) and the
    distribution's (requires-python: the build host's tools, 3.10). The device files are
    linted as MIN_PYTHON code, and the device never needs a newer Python than the host."""
    declared = importlib.metadata.metadata("edgeboost")["Requires-Python"]
    assert declared == ">=3.10"
    assert MIN_PYTHON == (3, 9)
    need(sys.version_info >= (3, 11), "tomllib (Python 3.11) to read pyproject.toml")
    import tomllib

    ruff = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]
    linted_as = {
        pattern: version
        for pattern, version in ruff["per-file-target-version"].items()
        if version == "py" + "".join(map(str, MIN_PYTHON))
    }
    for path in runtime_files().values():
        if path.suffix == ".py":
            name = path.resolve().relative_to(REPO).as_posix()
            assert any(fnmatch.fnmatch(name, p) for p in linted_as), f"{name} is not linted as 3.9"


def test_install_checks_python_first_in_both_recipes(packaged: Path) -> None:
    inference = [m["Lifecycle"]["Install"]["Script"] for m in _recipe(packaged)["Manifests"]]
    (consumer,) = _recipe(packaged, f"{NAME}.Consumer")["Manifests"]
    for script in [*inference, consumer["Lifecycle"]["Install"]["Script"]]:
        first = script.splitlines()[0]
        minimum = ", ".join(map(str, MIN_PYTHON))
        assert first.startswith(
            f"python3 -c 'import sys; sys.exit(sys.version_info < ({minimum}))'"
        )


def test_install_refuses_an_old_python_in_one_line(
    all_target_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A minimum no interpreter meets, to see this interpreter refused.
    monkeypatch.setattr("edgeboost.recipes.package.MIN_PYTHON", (99, 0))
    output = tmp_path / "out"
    package_bundle(all_target_bundle, output, OPTIONS)
    result = _run_install(output, host_target(), tmp_path)
    assert result.returncode == 1
    found = f"Python {sys.version.split()[0]}"
    assert result.stderr == (
        f"edgeboost needs python3 >= 99.0 (found: {found}): install Python 99.0 or newer as "
        "python3\n"
    )


def test_the_nucleus_rules_refuse_what_they_should() -> None:
    """The re-implemented rules can say no: nucleus lite skips a manifest without runtime,
    and the Java Nucleus one that asks for a value it does not report."""
    old = {"Platform": {"os": "linux", "architecture": "amd64"}, "Lifecycle": {"Run": "x"}}
    assert lite_select("amd64", [old]) is None
    assert java_select({"os": "linux", "architecture": "amd64"}, [old]) is old
    lite_only = {"Platform": {"os": "linux", "runtime": "aws_nucleus_lite"}, "Lifecycle": {"a": 1}}
    assert java_select({"os": "linux", "architecture": "amd64"}, [lite_only]) is None
    assert lite_select("arm", [lite_only]) is lite_only
    # The armv7 manifest before this change, on Raspberry Pi OS 32-bit with its 64-bit kernel.
    armv7 = {"Platform": {"os": "linux", "architecture": "arm", "architecture.detail": "armv7l"}}
    assert java_select(java_platform("arm", "aarch64"), [armv7]) is None
    assert java_select(java_platform("arm", "armv7l"), [armv7]) is armv7


def test_access_control_names_exact_topics_only(packaged: Path) -> None:
    recipe = _recipe(packaged)
    config = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert config["RequestTopic"] == "sensors/predict"
    policies = config["accessControl"]["aws.greengrass.ipc.pubsub"]
    granted: dict[str, set[str]] = {}
    for policy in policies.values():
        for operation in policy["operations"]:
            granted.setdefault(operation, set()).update(policy["resources"])
    assert granted == {
        "aws.greengrass#SubscribeToTopic": {"sensors/predict", "local/inference"},
        "aws.greengrass#PublishToTopic": {
            "sensors/prediction",
            "sensors/prediction/*",
            "local/result",
        },
    }
    for resources in granted.values():
        assert not any("+" in r or "#" in r for r in resources), "MQTT wildcards are literal here"


def test_runtime_zips_hold_the_runtime_and_no_model(packaged: Path) -> None:
    for triple in TARGETS:
        with zipfile.ZipFile(
            packaged / "artifacts" / NAME / VERSION / f"edgeboost-runtime-{triple}.zip"
        ) as z:
            names = set(z.namelist())
        assert names == set(runtime_files())
        assert not any(
            part in n for n in names for part in ("compile/", "broker/", "numpy", "xgboost")
        )


def test_model_zips_hold_one_platform_bundle_named_after_its_checksums(
    all_target_bundle: Path, packaged: Path
) -> None:
    """Each model zip: manifest, SHA256SUMS and that platform's library at the top level
    (Greengrass unpacks it into a folder named after the zip), the zip named after the first
    16 hex digits of the sha256 of that SHA256SUMS; the configuration lists each folder."""
    recipe = _recipe(packaged, MODEL)
    assert (recipe["ComponentName"], recipe["ComponentVersion"]) == (MODEL, VERSION)
    assert "ComponentDependencies" not in recipe
    bundle = recipe["ComponentConfiguration"]["DefaultConfiguration"]["Bundle"]
    assert list(bundle) == ["Folders", "ModelName", "ModelSha256", "Version"]
    source = json.loads((all_target_bundle / "manifest.json").read_text())["model"]
    assert (bundle["ModelName"], bundle["ModelSha256"], bundle["Version"]) == (
        source["name"],
        source["sha256"],
        VERSION,
    )
    assert [m["Platform"] for m in recipe["Manifests"]] == PLATFORMS
    artifacts = packaged / "artifacts" / MODEL / VERSION
    assert sorted(p.name for p in artifacts.iterdir()) == sorted(
        f"{folder}.zip" for folder in bundle["Folders"].values()
    )
    for manifest, triple in zip(recipe["Manifests"], TARGETS, strict=True):
        folder = bundle["Folders"][triple]
        # Nothing to run; readable by the inference component's user (see model-manifest.yaml).
        # A lifecycle that runs nothing of ours: nucleus lite fetches only such manifests.
        assert lite_select(manifest["Platform"]["architecture"], [manifest]) is manifest
        assert manifest["Lifecycle"] == {"Install": {"Script": 'echo "model bundle unpacked"'}}
        assert manifest["Artifacts"] == [
            {
                "Uri": f"s3://REPLACE-WITH-YOUR-BUCKET/{MODEL}/{VERSION}/{folder}.zip",
                "Unarchive": "ZIP",
                "Permission": {"Read": "ALL"},
            }
        ]
        with zipfile.ZipFile(artifacts / f"{folder}.zip") as z:
            assert sorted(z.namelist()) == [
                "SHA256SUMS",
                f"lib/{triple}/libmodel.so",
                "manifest.json",
            ]
            sums = z.read("SHA256SUMS")
            assert z.read("manifest.json") == (all_target_bundle / "manifest.json").read_bytes()
            library = z.read(f"lib/{triple}/libmodel.so")
        assert folder == f"bundle-{hashlib.sha256(sums).hexdigest()[:16]}"
        assert library == (all_target_bundle / "lib" / triple / "libmodel.so").read_bytes()
    assert len(set(bundle["Folders"].values())) == len(TARGETS)


def test_zips_are_reproducible(all_target_bundle: Path, packaged: Path, tmp_path: Path) -> None:
    package_bundle(all_target_bundle, tmp_path, OPTIONS)
    for component in (NAME, MODEL):
        folder = Path("artifacts") / component / VERSION
        names = sorted(p.name for p in (packaged / folder).iterdir())
        assert names == sorted(p.name for p in (tmp_path / folder).iterdir())
        assert len(names) == len(TARGETS)
        for name in names:
            assert (tmp_path / folder / name).read_bytes() == (
                packaged / folder / name
            ).read_bytes()
        recipe = Path("recipes") / f"{component}-{VERSION}.yaml"
        assert (tmp_path / recipe).read_text() == (packaged / recipe).read_text()


def test_host_zips_alone_predict(all_target_bundle: Path, packaged: Path, tmp_path: Path) -> None:
    """The host's runtime zip and model zip, each unpacked into an empty folder: the CLI of
    the one predicts with the other."""
    triple = host_target()
    folders = _recipe(packaged, MODEL)["ComponentConfiguration"]["DefaultConfiguration"]
    folder = folders["Bundle"]["Folders"][triple]
    runtime_zip = packaged / "artifacts" / NAME / VERSION / f"edgeboost-runtime-{triple}.zip"
    with zipfile.ZipFile(runtime_zip) as z:
        z.extractall(tmp_path / "runtime")
    with zipfile.ZipFile(packaged / "artifacts" / MODEL / VERSION / f"{folder}.zip") as z:
        z.extractall(tmp_path / folder)
    rows = [[0.1, -0.2, 0.3, None, 0.5, -0.6], [1, 2, 3, 4, 5, 6]]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path / "runtime")}
    result = subprocess.run(
        [sys.executable, "-m", "edgeboost", "predict", str(tmp_path / folder), "rows.json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == Model.load(all_target_bundle).predict(rows)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "has space"}, "component name"),
        ({"version": "1.0"}, "not semantic"),
        ({"model_version": "2"}, "not semantic"),
        ({"name": "x" * 125}, "component name 'x{125}.Model'"),
        ({"request_topic": "sensors/+"}, "exact topics only"),
        ({"response_topic": "sensors/#"}, "exact topics only"),
    ],
)
def test_bad_options_are_refused(
    all_target_bundle: Path, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    options = ComponentOptions(**{"name": NAME, "version": VERSION, **change})
    with pytest.raises(PackagingError, match=message):
        package_bundle(all_target_bundle, tmp_path, options)


def test_a_tampered_bundle_is_not_packaged(all_target_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(all_target_bundle, copy)
    library = copy / "lib" / "armv7-linux-gnueabihf" / "libmodel.so"
    data = bytearray(library.read_bytes())
    data[100] ^= 0xFF
    library.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="armv7-linux-gnueabihf/libmodel.so"):
        package_bundle(copy, tmp_path / "out", OPTIONS)


def test_model_only_writes_a_new_model_component_version_and_nothing_else(
    all_target_bundle: Path, packaged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The common update: `edgeboost package --model-only --model-version` writes the model
    component alone, prints each file it wrote, and the runtime component already deployed
    accepts it (same major)."""
    output = tmp_path / "out"
    argv = ["package", str(all_target_bundle), "-o", str(output), "--name", NAME]
    argv += ["--version", VERSION, "--model-only", "--model-version", "1.4.0"]
    assert main(argv) == 0
    written = sorted(p.relative_to(output) for p in output.rglob("*") if p.is_file())
    recipe = Path("recipes") / f"{MODEL}-1.4.0.yaml"
    model = yaml.safe_load((output / recipe).read_text())
    folders = model["ComponentConfiguration"]["DefaultConfiguration"]["Bundle"]["Folders"]
    zips = [Path("artifacts") / MODEL / "1.4.0" / f"{f}.zip" for f in folders.values()]
    assert written == sorted([recipe, *zips])
    printed = [line.split(" (")[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(line).relative_to(output) for line in printed) == written
    assert model["ComponentConfiguration"]["DefaultConfiguration"]["Bundle"]["Version"] == "1.4.0"
    # The same bundle: the same folders as the 1.2.3 packaged with the runtime.
    assert (
        folders
        == _recipe(packaged, MODEL)["ComponentConfiguration"]["DefaultConfiguration"]["Bundle"][
            "Folders"
        ]
    )
    requirement = _recipe(packaged)["ComponentDependencies"][MODEL]["VersionRequirement"]
    assert requirement == ">=1.0.0 <2.0.0"  # 1.4.0 fits


def test_runtime_only_asks_for_the_model_major_it_was_packaged_with(
    all_target_bundle: Path, tmp_path: Path
) -> None:
    options = ComponentOptions(name=NAME, version="1.1.0", model_version="2.0.0")
    package = package_bundle(all_target_bundle, tmp_path, options, only="runtime")
    assert package.model is None and package.runtime is not None
    assert sorted(p.name for p in (tmp_path / "recipes").iterdir()) == [f"{NAME}-1.1.0.yaml"]
    assert not (tmp_path / "artifacts" / MODEL).exists()
    recipe = yaml.safe_load(package.runtime.recipe.read_text())
    assert recipe["ComponentDependencies"][MODEL]["VersionRequirement"] == ">=2.0.0 <3.0.0"


def test_a_consumer_without_the_runtime_is_refused(all_target_bundle: Path, tmp_path: Path) -> None:
    requests = SHIPPED_MODEL.parent / "requests.json"
    with pytest.raises(PackagingError, match="the example consumer goes with the inference"):
        package_bundle(
            all_target_bundle, tmp_path, OPTIONS, only="model", consumer_requests=requests
        )

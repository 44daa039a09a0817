"""`edgeboost package --lambda`: the Lambda zips, run as Lambda runs them, and their template.

Each zip is unpacked into an empty folder and its handler imported from there by a Python of
the zip's runtime (python3.13), which answers a Function URL event (payload format 2.0)
carrying samples.json with the old deployed model's predictions:

- x86_64: this machine's Python 3.13 (pyenv's; the build host's tools run on 3.11),
- arm64: Debian trixie's arm64 python3.13 under qemu-user (compile/emulation.py),

each loading the zip's own _cffi_backend (from cffi's manylinux wheel), not another cffi.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeboost.benchmarks.lambda_coldstart import find_python, measure
from edgeboost.cli import main
from edgeboost.compile.emulation import default_cache_dir, prepare_python_root, run_python
from edgeboost.compile.errors import EmulationError, PackagingError, ToolchainError
from edgeboost.recipes import lambda_package
from edgeboost.recipes.lambda_package import (
    ARCHITECTURES,
    CFFI_VERSION,
    HANDLER,
    RUNTIMES,
    LambdaPackage,
    cffi_wheel,
    package_lambda,
)
from edgeboost.runtime import Model
from edgeboost.runtime.integrity import CHECKSUMS_NAME
from edgeboost.runtime.targets import host_target

from .compiled_case import with_tool
from .conftest import OLD_MODEL_EXPECTED, need

pytestmark = pytest.mark.needs_shared

CACHE = default_cache_dir()
TARGET_BYTES = 1_500_000  # the target for one zip (Lambda's own limit is 50 MB)

# Run by the zip's Python in a fresh process, as Lambda's runtime does: import the handler's
# module from the unpacked zip (on sys.path), then call it with the event.
DRIVER = r"""
import json, sys
from edgeboost.runtime import lambda_handler
event = json.loads(sys.argv[1])
url = lambda_handler.handler(event, None)
old = lambda_handler.handler({"body": event["body"], "isBase64Encoded": False}, None)
import _cffi_backend
(model,) = lambda_handler._models.values()
print(json.dumps({
    "url": url,
    "old": old,
    "python": "%d.%d" % sys.version_info[:2],
    "cffi_backend": _cffi_backend.__file__,
    "target": model.target,
    "heavy": sorted(m for m in ("cffi", "pycparser", "numpy") if m in sys.modules),
}))
"""


def _package(bundle: Path, output: Path, **options: Any) -> LambdaPackage:
    try:
        return package_lambda(bundle, output, **options)
    except ToolchainError as exc:
        if "cannot download" not in str(exc):
            raise
        need(False, f"cffi's wheels from PyPI [{exc}]")
        raise


@pytest.fixture(scope="module")
def bundle(shared_data: Path, compile_once: Callable[..., Path]) -> Path:
    """The old deployed model, for every target (the Lambda zips take two of the three)."""
    need(shutil.which("aarch64-linux-gnu-gcc") is not None, "aarch64-linux-gnu-gcc")
    need(shutil.which("arm-linux-gnueabihf-gcc") is not None, "arm-linux-gnueabihf-gcc")
    return compile_once(shared_data / "xgboost_wine_quality.json", "lambda-old-wine", ("all",))


@pytest.fixture(scope="module")
def packaged(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> LambdaPackage:
    return _package(bundle, tmp_path_factory.mktemp("lambda"))


def url_event(body: str) -> str:
    """A Function URL request as Lambda hands it over (payload format 2.0), as JSON."""
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "x.lambda-url.on.aws"},
        "requestContext": {"http": {"method": "POST", "path": "/"}, "stage": "$default"},
        "body": body,
        "isBase64Encoded": False,
    }
    return json.dumps(event)


def unpack(zip_path: Path, folder: Path) -> Path:
    folder.mkdir()
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    return folder


def check_answers(
    report: dict[str, Any], folder: Path, zip_path: Path, triple: str, python: str
) -> None:
    url = report["url"]
    assert (url["statusCode"], url["headers"]) == (200, {"content-type": "application/json"})
    assert json.loads(url["body"]) == OLD_MODEL_EXPECTED
    assert report["old"] == {"statusCode": 200, "body": OLD_MODEL_EXPECTED}
    assert report["python"] == python
    assert report["target"] == triple
    # The zip's own cffi module, and no cffi, pycparser or numpy: nothing else is there.
    assert Path(report["cffi_backend"]).parent == folder
    assert report["heavy"] == []
    # Lambda's /var/task is read-only: nothing may have been written into it.
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        i.filename for i in zipfile.ZipFile(zip_path).infolist()
    ]


def host_python(version: str) -> str:
    found = find_python(version)
    need(found is not None, f"python{version} (the Python of Lambda's runtime), on PATH or pyenv's")
    assert found is not None
    return found


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_the_x86_64_zip_answers_on_this_machines_python_of_the_runtime(
    runtime: str,
    bundle: Path,
    packaged: LambdaPackage,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    if host_target() != "x86_64-linux-gnu":
        pytest.skip("the x86_64 zip runs natively on an x86_64 machine only")
    python = RUNTIMES[runtime]
    interpreter = host_python(python)
    package = (
        packaged if runtime == packaged.runtime else _package(bundle, tmp_path, runtime=runtime)
    )
    folder = unpack(package.zips["x86_64"], tmp_path / "task")
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(folder),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "EDGEBOOST_BUNDLE": str(folder / "bundle"),
    }
    event = url_event((shared_data / "samples.json").read_text())
    result = subprocess.run(
        [interpreter, "-c", DRIVER, event],
        cwd=folder,  # as Lambda's: /var/task (and the checkout's edgeboost/ must not be found)
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    check_answers(
        json.loads(result.stdout), folder, package.zips["x86_64"], "x86_64-linux-gnu", python
    )


def test_the_arm64_zip_answers_on_an_emulated_debian_python_of_the_runtime(
    packaged: LambdaPackage, shared_data: Path, tmp_path: Path
) -> None:
    assert packaged.runtime == "python3.13", "trixie's Python is 3.13"
    triple = ARCHITECTURES["arm64"].triple
    what = f"a trixie {triple} userland"
    try:
        root = with_tool(what, lambda: prepare_python_root(triple, CACHE, suite="trixie"))
    except EmulationError as exc:  # no route to the Debian mirror, broken apt lists
        need(False, f"{what} [{exc}]")
        raise
    folder = unpack(packaged.zips["arm64"], tmp_path / "task")
    event = url_event((shared_data / "samples.json").read_text())
    result = run_python(
        triple,
        root,
        ["-c", DRIVER, event],
        pythonpath=[folder],
        cwd=folder,
        env={"EDGEBOOST_BUNDLE": str(folder / "bundle"), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    check_answers(
        json.loads(result.stdout), folder.resolve(), packaged.zips["arm64"], triple, "3.13"
    )


def test_each_zip_holds_the_runtime_cffi_and_its_architectures_bundle_only(
    bundle: Path, packaged: LambdaPackage, tmp_path: Path
) -> None:
    assert sorted(packaged.zips) == ["arm64", "x86_64"]  # armv7 has no Lambda
    for name, path in packaged.zips.items():
        arch = ARCHITECTURES[name]
        size = path.stat().st_size
        assert size <= TARGET_BYTES, f"{path.name}: {size:,} bytes"
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            assert names == sorted(names)
            assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
            libraries = [n for n in names if n.endswith("libmodel.so")]
            assert libraries == [f"bundle/lib/{arch.triple}/libmodel.so"]
            tag = "cpython-" + RUNTIMES[packaged.runtime].replace(".", "")
            assert f"_cffi_backend.{tag}-{arch.machine}-linux-gnu.so" in names
            assert f"licenses/cffi-{CFFI_VERSION}/LICENSE" in names
            assert "edgeboost/runtime/lambda_handler.py" in names
            assert not [n for n in names if n.startswith(("cffi/", "edgeboost/compile", "numpy"))]
            sums = archive.read(f"bundle/{CHECKSUMS_NAME}").decode().splitlines()
            listed = sorted(line.split("  ", 1)[1] for line in sums)
            assert listed == [f"lib/{arch.triple}/libmodel.so", "manifest.json"]
            info = json.loads(archive.read("edgeboost-lambda.json"))
        assert info["runtime"] == packaged.runtime
        assert (info["architecture"], info["target"]) == (name, arch.triple)
        assert (info["handler"], info["cffi"]["version"]) == (HANDLER, CFFI_VERSION)
    # The x86_64 zip's bundle is a bundle that loads: every check of Model.load passes.
    if host_target() == "x86_64-linux-gnu":
        zipped = Model.load(unpack(packaged.zips["x86_64"], tmp_path / "x86_64") / "bundle")
        rows = [[0.5] * zipped.num_feature]
        assert zipped.predict(rows) == Model.load(bundle).predict(rows)


def test_zips_and_template_are_reproducible(
    bundle: Path, packaged: LambdaPackage, tmp_path: Path
) -> None:
    again = _package(bundle, tmp_path)
    for before, after in zip(packaged.files(), again.files(), strict=True):
        assert before.name == after.name
        assert before.read_bytes() == after.read_bytes(), before.name


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def cfn_lint(template: Path) -> None:
    """cfn-lint (a dev extra) on the template, as written: deploying runs `package` on it,
    which is what warning W3002 (a local path as Code) is about."""
    linter = Path(sys.executable).with_name("cfn-lint")
    need(linter.is_file(), "cfn-lint (pip install -e '.[dev]')")
    command = [str(linter), "--ignore-checks", "W3002", "--", str(template)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_deploys_each_zip_behind_an_iam_function_url(packaged: LambdaPackage) -> None:
    template = yaml.safe_load(packaged.template.read_text())
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    architecture = template["Parameters"]["Architecture"]
    assert (sorted(architecture["AllowedValues"]), architecture["Default"]) == (
        ["arm64", "x86_64"],
        "arm64",
    )
    functions = resources_of(template, "AWS::Lambda::Function")
    urls = resources_of(template, "AWS::Lambda::Url")
    assert len(functions) == len(urls) == 2
    assert resources_of(template, "AWS::Lambda::Permission") == {}  # IAM callers only
    deployed = {}
    for logical, function in functions.items():
        properties = function["Properties"]
        (arch,) = properties["Architectures"]
        condition = template["Conditions"][function["Condition"]]
        assert condition == {"Fn::Equals": [{"Ref": "Architecture"}, arch]}
        assert (properties["Runtime"], properties["Handler"]) == ("python3.13", HANDLER)
        assert properties["MemorySize"] == {"Ref": "MemorySize"}
        # Code names the zip beside the template, and the bundle variable its folder there.
        zip_path = packaged.template.parent / properties["Code"]
        assert zip_path == packaged.zips[arch]
        bundle = properties["Environment"]["Variables"]["EDGEBOOST_BUNDLE"]
        assert bundle.startswith("/var/task/")
        with zipfile.ZipFile(zip_path) as archive:
            assert bundle.removeprefix("/var/task/") + "/manifest.json" in archive.namelist()
        (url,) = [
            u
            for u in urls.values()
            if u["Properties"]["TargetFunctionArn"]["Fn::GetAtt"][0] == logical
        ]
        assert url["Properties"]["AuthType"] == "AWS_IAM"
        assert url["Condition"] == function["Condition"]
        deployed[arch] = logical
    assert sorted(deployed) == ["arm64", "x86_64"]
    assert "FunctionUrl" in template["Outputs"]
    cfn_lint(packaged.template)


def test_lambda_public_opens_the_url_to_anyone_and_says_so(bundle: Path, tmp_path: Path) -> None:
    package = _package(bundle, tmp_path, public=True)
    template = yaml.safe_load(package.template.read_text())
    assert "AuthType NONE" in template["Description"]
    urls = resources_of(template, "AWS::Lambda::Url")
    assert {u["Properties"]["AuthType"] for u in urls.values()} == {"NONE"}
    permissions = resources_of(template, "AWS::Lambda::Permission").values()
    # Both actions, for each function: URLs made since October 2025 need both.
    granted = sorted(
        (p["Properties"]["FunctionName"]["Ref"], p["Properties"]["Action"]) for p in permissions
    )
    functions = sorted(resources_of(template, "AWS::Lambda::Function"))
    actions = ["lambda:InvokeFunction", "lambda:InvokeFunctionUrl"]
    assert granted == [(f, a) for f in functions for a in actions]
    for permission in permissions:
        assert permission["Properties"]["Principal"] == "*"
        if permission["Properties"]["Action"] == "lambda:InvokeFunction":
            assert permission["Properties"]["InvokedViaFunctionUrl"] is True
        else:
            assert permission["Properties"]["FunctionUrlAuthType"] == "NONE"
    cfn_lint(package.template)


def test_the_cli_writes_the_zips_and_refuses_greengrass_options(
    bundle: Path, packaged: LambdaPackage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The wheels are in the cache since `packaged`: no download here.
    assert main(["package", str(bundle), "--lambda", "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    for name in ("python3.13-x86_64.zip", "python3.13-arm64.zip", "template.yaml"):
        assert name in printed
    for extra in (["--name", "x"], ["--gdk"], ["--model-only"]):
        with pytest.raises(SystemExit, match="Greengrass options, not --lambda"):
            main(["package", str(bundle), "--lambda", "-o", str(tmp_path), *extra])
    with pytest.raises(SystemExit, match="--lambda-public goes with --lambda"):
        main(["package", str(bundle), "--lambda-public", "-o", str(tmp_path)])
    with pytest.raises(SystemExit, match="--name and --version are required"):
        main(["package", str(bundle), "-o", str(tmp_path), "--name", "com.example.X"])


def test_a_library_for_a_newer_glibc_than_lambdas_is_refused() -> None:
    lambda_package._check_glibc("ok", b"\x00GLIBC_2.2.5\x00GLIBC_2.34\x00GLIBC_PRIVATE\x00")
    with pytest.raises(PackagingError, match="needs GLIBC_2.38; Lambda's Amazon Linux 2023 has"):
        lambda_package._check_glibc("libmodel.so", b"\x00GLIBC_2.17\x00GLIBC_2.38\x00")


def test_a_wheel_that_differs_from_its_pin_is_refused(
    packaged: LambdaPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = cffi_wheel(packaged.runtime, "x86_64")  # cached by the package fixture
    shutil.copyfile(wheel, tmp_path / wheel.name)
    assert cffi_wheel(packaged.runtime, "x86_64", tmp_path) == tmp_path / wheel.name
    pins = dict(lambda_package._CFFI_WHEELS)
    pins[RUNTIMES[packaged.runtime], "x86_64"] = "0" * 64
    monkeypatch.setattr(lambda_package, "_CFFI_WHEELS", pins)
    # The cached copy no longer matches: downloaded again, and refused.
    with pytest.raises(PackagingError, match="sha256 is [0-9a-f]{64}, pinned 0{64}"):
        cffi_wheel(packaged.runtime, "x86_64", tmp_path)


def test_the_cold_start_benchmark_runs_the_zip(packaged: LambdaPackage, shared_data: Path) -> None:
    if host_target() != "x86_64-linux-gnu":
        pytest.skip("the x86_64 zip runs natively on an x86_64 machine only")
    python = host_python(RUNTIMES[packaged.runtime])
    samples = json.loads((shared_data / "samples.json").read_text())
    event = json.loads(url_event(json.dumps(samples)))
    result = measure(packaged.zips["x86_64"], python, event, runs=1)
    for mode in ("no_pyc", "pyc"):
        steps = result[mode]
        for step in ("import_s", "load_s", "first_request_s"):
            assert 0 < steps[step]["median"] < steps["process_s"]["median"]
        assert steps["vm_hwm_kib"]["median"] > 0

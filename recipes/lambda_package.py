"""Package a bundle for AWS Lambda: one deployment zip per architecture, and a template.

Output (``edgeboost package BUNDLE --lambda -o OUT``)::

    OUT/
      NAME-python3.13-x86_64.zip     a Lambda zip: runtime, cffi's C module, the x86_64 bundle
      NAME-python3.13-arm64.zip      the same for arm64 (Graviton), with the aarch64 bundle
      template.yaml                  CloudFormation: the function and its Function URL

A zip, as Lambda unpacks it into /var/task (the folder on sys.path)::

    edgeboost/...                     the device runtime (compile/runtime_tree.py), the handler
                                      edgeboost.runtime.lambda_handler.handler included
    _cffi_backend.cpython-313-<machine>-linux-gnu.so   from cffi's manylinux wheel (pinned)
    licenses/cffi-<version>/LICENSE   the wheel's licence
    bundle/manifest.json, bundle/SHA256SUMS, bundle/lib/<target>/libmodel.so   this
                                      architecture's library only, sealed like a model zip
    edgeboost-lambda.json             what the zip was made from (runtime, wheel, model)

Nothing else is needed: the runtime imports only cffi's C module (runtime/native.py), which
is the one compiled file of the cffi wheel, so no pip install runs at build or deploy time
and no layer is needed. Zips are reproducible: the same bundle, edgeboost and wheel give the
same bytes (fixed timestamps, sorted entries; recipes/package.py writes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeboost import __version__
from edgeboost.caches import cache_dir
from edgeboost.compile.errors import MissingExtraError, PackagingError, ToolchainError
from edgeboost.compile.runtime_tree import runtime_files
from edgeboost.runtime.lambda_handler import BUNDLE_ENV_VAR
from edgeboost.runtime.manifest import Manifest

# The Greengrass packaging's bundle verification, one-platform bundle and zip writer: shared,
# so that a Lambda zip holds exactly the bundle a model component's zip holds.
from .package import _bundle_entries, _verified_manifest, _write_zip

__all__ = [
    "ARCHITECTURES",
    "CFFI_VERSION",
    "DEFAULT_RUNTIME",
    "HANDLER",
    "MAX_ZIP_BYTES",
    "RUNTIMES",
    "LambdaPackage",
    "cffi_wheel",
    "default_wheel_cache",
    "package_lambda",
]

HANDLER = "edgeboost.runtime.lambda_handler.handler"
TASK_ROOT = "/var/task"  # where Lambda unpacks the zip (LAMBDA_TASK_ROOT)
BUNDLE_FOLDER = "bundle"
INFO_NAME = "edgeboost-lambda.json"
TEMPLATE_NAME = "template.yaml"
# Lambda refuses a zip uploaded directly above 50 MB, and any function above 250 MB unpacked.
MAX_ZIP_BYTES = 50 * 1000 * 1000
MAX_UNZIPPED_BYTES = 250 * 1000 * 1000
# Lambda runtime -> its Python. python3.13 is the default: the newest runtime that both
# architectures' zips are run on here with their own cffi module (the host's Python 3.13 for
# x86_64, Debian trixie's under qemu for arm64; tests/test_lambda_package.py), on Amazon Linux
# 2023, supported until 2029. python3.12 (until 2028) is built the same way; its x86_64 zip is
# run here too, its arm64 zip is not (no arm64 Python 3.12 to emulate). python3.11 and older
# are deprecated (June 2026), and python3.14 has no Python here to check its zips with.
RUNTIMES = {"python3.13": "3.13", "python3.12": "3.12"}
DEFAULT_RUNTIME = "python3.13"
# Both runtimes run on Amazon Linux 2023, whose glibc is 2.34. The machines that build and
# test the zips have newer ones (Debian 12: 2.36, 13: 2.41), so a library needing a newer
# symbol would load here and fail on Lambda: refused when packaging instead.
LAMBDA_GLIBC = (2, 34)


@dataclass(frozen=True)
class Architecture:
    name: str  # Lambda's name
    triple: str  # the bundle's target
    machine: str  # os.uname().machine on it, as in wheel and module file names


ARCHITECTURES = {
    a.name: a
    for a in (
        Architecture("x86_64", "x86_64-linux-gnu", "x86_64"),
        Architecture("arm64", "aarch64-linux-gnu", "aarch64"),
    )
}

# cffi, pinned: the runtime's _abi.py is checked against this version's backend in the tests,
# and the wheels' sha256 are pinned too, so any index, mirror or cache serves the same bytes.
CFFI_VERSION = "2.1.1"
_CFFI_WHEELS = {
    ("3.13", "x86_64"): "a931079504ecc49efed7744c476a5c343a92fabf66dec2db95edb1b2fdc770e2",
    ("3.13", "arm64"): "f16c709686a78c727bbbf059f92b0bf41c6fc60deec706d2dc19f529175a6125",
    ("3.12", "x86_64"): "c1453022f490d2459a11819d83ad1d586e9ff65a12ac3e705ffebd46d3685dcf",
    ("3.12", "arm64"): "68e62fe11f30d5ca8289242866f0a5291402d8529ca2178ab8afc5c9694ae890",
}
WHEEL_CACHE_ENV_VAR = "EDGEBOOST_LAMBDA_WHEELS"
_GLIBC_VERSION = re.compile(rb"GLIBC_(\d+)\.(\d+)")


@dataclass(frozen=True)
class LambdaPackage:
    """What ``package_lambda`` wrote: a zip per Lambda architecture, and the template."""

    runtime: str
    zips: dict[str, Path]
    template: Path

    def files(self) -> list[Path]:
        return [*self.zips.values(), self.template]


def package_lambda(
    bundle: str | Path,
    output: str | Path,
    *,
    runtime: str = DEFAULT_RUNTIME,
    public: bool = False,
    wheel_cache: str | Path | None = None,
) -> LambdaPackage:
    """Write a Lambda zip for each architecture ``bundle`` has a library for, and
    ``template.yaml``, under ``output``. ``public``: the Function URL's AuthType is NONE
    (anyone can call it) instead of AWS_IAM."""
    if runtime not in RUNTIMES:
        raise PackagingError(f"Lambda runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
    bundle, output = Path(bundle), Path(output)
    manifest = _verified_manifest(bundle)
    architectures = [a for a in ARCHITECTURES.values() if a.triple in manifest.targets]
    if not architectures:
        raise PackagingError(
            f"{bundle}: no library for Lambda (x86_64-linux-gnu or aarch64-linux-gnu); the "
            f"bundle has {sorted(manifest.targets)}. Compile with --target all"
        )
    output.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]", "-", manifest.model.name)
    code = [(archived, source.read_bytes()) for archived, source in runtime_files().items()]
    zips = {}
    for arch in architectures:
        wheel = cffi_wheel(runtime, arch.name, wheel_cache)
        backend_name, backend, licence = _from_wheel(wheel)
        model = [
            (f"{BUNDLE_FOLDER}/{n}", data)
            for n, data in _bundle_entries(bundle, manifest, arch.triple)
        ]
        library = dict(model)[f"{BUNDLE_FOLDER}/{manifest.targets[arch.triple].file}"]
        for label, image in ((backend_name, backend), (f"{arch.triple} library", library)):
            _check_glibc(label, image)
        info = _info(runtime, arch, manifest, wheel)
        entries = [
            *code,
            (backend_name, backend),
            (f"licenses/cffi-{CFFI_VERSION}/LICENSE", licence),
            *model,
            (INFO_NAME, info),
        ]
        path = _write_zip(output / f"{name}-{runtime}-{arch.name}.zip", entries)
        _check_size(path, sum(len(data) for _, data in entries))
        zips[arch.name] = path
    template = output / TEMPLATE_NAME
    template.write_text(_template(manifest, runtime, zips, public=public))
    return LambdaPackage(runtime, zips, template)


def default_wheel_cache() -> Path:
    """$EDGEBOOST_LAMBDA_WHEELS, else $XDG_CACHE_HOME (or ~/.cache)/edgeboost/lambda-wheels."""
    return cache_dir("lambda-wheels", WHEEL_CACHE_ENV_VAR)


def cffi_wheel(runtime: str, architecture: str, cache: str | Path | None = None) -> Path:
    """cffi's manylinux wheel for a Lambda runtime and architecture: from the cache when it is
    there with the pinned sha256, else downloaded by pip (from the index pip is set up for)."""
    python, arch = RUNTIMES[runtime], ARCHITECTURES[architecture]
    expected = _CFFI_WHEELS[python, architecture]
    tag = "cp" + python.replace(".", "")
    filename = (
        f"cffi-{CFFI_VERSION}-{tag}-{tag}-manylinux2014_{arch.machine}"
        f".manylinux_2_17_{arch.machine}.whl"
    )
    folder = Path(cache) if cache is not None else default_wheel_cache()
    path = folder / filename
    if path.is_file() and _sha256(path.read_bytes()) == expected:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--disable-pip-version-check", "--only-binary=:all:"]
        command += ["--platform", f"manylinux2014_{arch.machine}", "--python-version", python]
        command += ["--implementation", "cp", "--abi", tag, f"cffi=={CFFI_VERSION}"]
        command += ["--dest", scratch]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        downloaded = Path(scratch) / filename
        if result.returncode != 0 or not downloaded.is_file():
            raise ToolchainError(
                f"cannot download {filename} (the Lambda zip's cffi module); pip needs to reach "
                f"PyPI, or put the wheel in {folder}",
                command=command,
                returncode=result.returncode,
                stderr=result.stderr,
            )
        found = _sha256(downloaded.read_bytes())
        if found != expected:
            raise PackagingError(f"{filename}: sha256 is {found}, pinned {expected}")
        os.replace(downloaded, path)  # atomic: a concurrent build sees no partial file
    return path


def _from_wheel(wheel: Path) -> tuple[str, bytes, bytes]:
    """(file name, bytes) of the wheel's _cffi_backend module, and its licence's bytes."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        # A wheel that vendored shared libraries (auditwheel's <package>.libs/) would need them
        # beside the module; cffi's link libffi statically. Pinned hashes keep it so, but a
        # bumped version must not silently ship a module that cannot load.
        vendored = [n for n in names if n.split("/")[0].endswith(".libs")]
        modules = [n for n in names if n.startswith("_cffi_backend.") and n.endswith(".so")]
        if vendored or len(modules) != 1:
            raise PackagingError(
                f"{wheel.name}: expected one _cffi_backend module and no vendored libraries, "
                f"found {modules + vendored}"
            )
        licence = archive.read(f"cffi-{CFFI_VERSION}.dist-info/licenses/LICENSE")
        return modules[0], archive.read(modules[0]), licence


def _check_glibc(label: str, image: bytes) -> None:
    # The version names an ELF file needs are strings in its dynamic string table.
    versions = {(int(a), int(b)) for a, b in _GLIBC_VERSION.findall(image)}
    newest = max(versions, default=None)
    if newest is not None and newest > LAMBDA_GLIBC:
        raise PackagingError(
            f"{label} needs GLIBC_{newest[0]}.{newest[1]}; Lambda's Amazon Linux 2023 has "
            f"{LAMBDA_GLIBC[0]}.{LAMBDA_GLIBC[1]}: compile on an older system"
        )


def _check_size(path: Path, unzipped: int) -> None:
    size = path.stat().st_size
    if size > MAX_ZIP_BYTES or unzipped > MAX_UNZIPPED_BYTES:
        raise PackagingError(
            f"{path.name}: {size:,} bytes zipped, {unzipped:,} unzipped; Lambda takes at most "
            f"{MAX_ZIP_BYTES:,} zipped (direct upload) and {MAX_UNZIPPED_BYTES:,} unzipped"
        )


def _info(runtime: str, arch: Architecture, manifest: Manifest, wheel: Path) -> bytes:
    info = {
        "runtime": runtime,
        "architecture": arch.name,
        "target": arch.triple,
        "handler": HANDLER,
        "bundle": BUNDLE_FOLDER,
        "model": {"name": manifest.model.name, "sha256": manifest.model.sha256},
        "edgeboost": __version__,
        "cffi": {
            "version": CFFI_VERSION,
            "wheel": wheel.name,
            "sha256": _sha256(wheel.read_bytes()),
        },
    }
    return (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()


def _template(manifest: Manifest, runtime: str, zips: dict[str, Path], *, public: bool) -> str:
    """A plain CloudFormation template (no SAM transform): `sam deploy --guided` and
    `aws cloudformation package` + `deploy` both upload each function's local zip, which
    they only do for a literal path. So each architecture has its own function, created
    only when the Architecture parameter names it."""
    try:
        import yaml
    except ImportError as exc:
        raise MissingExtraError("packaging needs PyYAML: pip install 'edgeboost[compile]'") from exc
    auth = "NONE" if public else "AWS_IAM"
    names = list(zips)
    default = "arm64" if "arm64" in zips else names[0]
    resources: dict[str, Any] = {
        "FunctionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                # Logs only: the function reads nothing but its own zip.
                "ManagedPolicyArns": [
                    {
                        "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                        "AWSLambdaBasicExecutionRole"
                    }
                ],
            },
        }
    }
    conditions = {}
    for arch, path in zips.items():
        suffix = _logical(arch)
        condition = f"Is{suffix}"
        conditions[condition] = {"Fn::Equals": [{"Ref": "Architecture"}, arch]}
        function = f"Function{suffix}"
        resources[function] = {
            "Type": "AWS::Lambda::Function",
            "Condition": condition,
            "Properties": {
                "Description": f"{manifest.model.name} (model sha256 {manifest.model.sha256[:12]})"
                " served by edgeboost",
                "Runtime": runtime,
                "Architectures": [arch],
                "Handler": HANDLER,
                "Code": path.name,  # beside this template; the deploy command uploads it
                "MemorySize": {"Ref": "MemorySize"},
                "Timeout": 10,
                "Role": {"Fn::GetAtt": ["FunctionRole", "Arn"]},
                "Environment": {"Variables": {BUNDLE_ENV_VAR: f"{TASK_ROOT}/{BUNDLE_FOLDER}"}},
            },
        }
        resources[f"FunctionUrl{suffix}"] = {
            "Type": "AWS::Lambda::Url",
            "Condition": condition,
            "Properties": {
                "TargetFunctionArn": {"Fn::GetAtt": [function, "Arn"]},
                "AuthType": auth,
            },
        }
        if public:
            # AuthType NONE still needs the function's policy to let anyone call it; URLs made
            # since October 2025 need both actions (lambda:InvokeFunction only through the URL).
            resources[f"PublicUrlPermission{suffix}"] = _permission(
                condition, function, "lambda:InvokeFunctionUrl", FunctionUrlAuthType="NONE"
            )
            resources[f"PublicInvokePermission{suffix}"] = _permission(
                condition, function, "lambda:InvokeFunction", InvokedViaFunctionUrl=True
            )
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            f"{manifest.model.name} compiled by edgeboost, on AWS Lambda ({runtime}) behind a "
            f"Function URL (AuthType {auth})"
        ),
        "Parameters": {
            "Architecture": {
                "Type": "String",
                "AllowedValues": names,
                "Default": default,
                "Description": "Lambda architecture; each has its own zip beside this template",
            },
            "MemorySize": {
                "Type": "Number",
                "Default": 256,
                "MinValue": 128,
                "MaxValue": 10240,
                "Description": "MB, and CPU in proportion (1,769 MB is one vCPU); the handler "
                "needs 16 MiB beside Lambda's runtime",
            },
        },
        "Conditions": conditions,
        "Resources": resources,
        "Outputs": {
            "FunctionUrl": {
                "Description": f"POST JSON records here (AuthType {auth})",
                "Value": _by_architecture(
                    names, lambda s: {"Fn::GetAtt": [f"FunctionUrl{s}", "FunctionUrl"]}
                ),
            },
            "FunctionName": {
                "Value": _by_architecture(names, lambda s: {"Ref": f"Function{s}"}),
            },
        },
    }
    header = (
        f"# Generated by edgeboost package --lambda. Deploy it with its zips beside it:\n"
        f"#   sam deploy --guided --capabilities CAPABILITY_IAM\n"
        f"# or: aws cloudformation package --template-file {TEMPLATE_NAME} --s3-bucket BUCKET "
        f"--output-template-file packaged.yaml\n"
        f"#     aws cloudformation deploy --template-file packaged.yaml --stack-name STACK "
        f"--capabilities CAPABILITY_IAM\n"
    )
    return header + yaml.safe_dump(template, sort_keys=False, width=100)


def _permission(condition: str, function: str, action: str, **extra: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Permission",
        "Condition": condition,
        "Properties": {
            "FunctionName": {"Ref": function},
            "Action": action,
            "Principal": "*",
            **extra,
        },
    }


def _by_architecture(names: list[str], value: Any) -> Any:
    """``value(suffix)`` of the architecture deployed: nested Fn::If over the conditions."""
    if len(names) == 1:
        return value(_logical(names[0]))
    first = _logical(names[0])
    return {"Fn::If": [f"Is{first}", value(first), _by_architecture(names[1:], value)]}


def _logical(architecture: str) -> str:
    """A part of a logical ID (letters and digits only): Arm64, X8664."""
    return re.sub(r"[^A-Za-z0-9]", "", architecture).capitalize()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

"""Debian suites for the emulated device userlands, and an apt of their own to fetch them.

A suite names the Debian release a device runs and what its userland is made of. apt resolves
and downloads its .debs with a private state folder (sources list, package lists, cache and an
empty dpkg status) and the target's architecture as its only one. So the userland is what a
fresh device of that release would install, whatever release the host runs, and the host's apt
sources, lists and dpkg architectures are never read or changed (nor is root needed).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import EmulationError, MissingToolError

__all__ = ["DEFAULT_SUITE", "SUITES", "DebPackage", "PrivateApt", "Suite", "debian_mirror"]

# A Debian archive URL; by default the one the host's apt already uses (see debian_mirror).
MIRROR_ENV_VAR = "EDGEBOOST_DEBIAN_MIRROR"
# Shipped by debian-archive-keyring; holds the bullseye, bookworm and trixie keys.
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class Suite:
    name: str
    # The interpreter /usr/bin/python3 points to in this release (package and binary name).
    python: str
    # What apt resolves the userland from; it adds every dependency (libc6, libssl for hashlib,
    # libexpat1, ...). Listed explicitly rather than trusting python3-cffi's Depends.
    packages: tuple[str, ...]

    def sources(self, mirror: str) -> str:
        """The one-line sources.list of a device of this release (main, no updates)."""
        return f"deb [signed-by={KEYRING}] {mirror} {self.name} main\n"


def _suite(name: str, python: str, libffi: str) -> Suite:
    cffi = ("python3-cffi", "python3-cffi-backend", "python3-pycparser", "python3-ply")
    return Suite(name, python, ("python3", python, *cffi, libffi, "libc6"))


SUITES = {
    s.name: s
    for s in (
        # Debian 12, Raspberry Pi OS bookworm: Python 3.11, cffi 1.15.
        _suite("bookworm", "python3.11", "libffi8"),
        # Debian 11, Raspberry Pi OS bullseye: Python 3.9, cffi 1.14 (the oldest device Python).
        _suite("bullseye", "python3.9", "libffi7"),
        # Debian 13: Python 3.13, the Python of the Lambda runtime the Lambda zips are built
        # for (recipes/lambda_package.py), so the arm64 zip's own _cffi_backend runs on it.
        _suite("trixie", "python3.13", "libffi8"),
    )
}
DEFAULT_SUITE = "bookworm"


def debian_mirror() -> str:
    """$EDGEBOOST_DEBIAN_MIRROR, else the Debian archive in the host's own apt sources (read,
    never changed), so that a local mirror or proxy serves the userlands too. Releases past
    their support leave the main mirrors: point the variable at an archive mirror then."""
    explicit = os.environ.get(MIRROR_ENV_VAR)
    if explicit:
        return explicit.rstrip("/")
    command = ["apt-get", "indextargets", "--format", "$(LABEL)\t$(REPO_URI)"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        label, _, uri = line.partition("\t")
        if label == "Debian" and uri:  # not Debian-Security, nor another vendor's archive
            return uri.rstrip("/")
    # apt lists only the targets whose lists it has: none before the first apt-get update.
    raise MissingToolError(
        "the host's apt knows no Debian archive (its sources name none, or apt-get update never "
        f"ran); run apt-get update, or set {MIRROR_ENV_VAR} to the URL of a Debian mirror (the "
        "folder that holds dists/ and pool/)"
    )


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        # apt-get download escapes the epoch colon this way.
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


_INST = re.compile(r"^Inst (?P<name>[^\s:]+)\S* \((?P<version>\S+) .*\[(?P<arch>[^\]\s]+)\]\)")


class PrivateApt:
    """apt-get for one suite and architecture, with all its state under ``folder``."""

    def __init__(self, suite: Suite, arch: str, folder: Path) -> None:
        self.suite, self.arch, self.folder = suite, arch, folder

    def options(self) -> list[str]:
        f = self.folder
        return [
            # Only this list: not the host's sources.list, sources.list.d or pinning.
            *("-o", f"Dir::Etc::sourcelist={f / 'sources.list'}"),
            *("-o", f"Dir::Etc::sourceparts={f / 'empty'}"),
            *("-o", f"Dir::Etc::preferences={f / 'preferences'}"),
            *("-o", f"Dir::Etc::preferencesparts={f / 'empty'}"),
            *("-o", f"Dir::State::Lists={f / 'lists'}"),
            *("-o", f"Dir::Cache={f / 'cache'}"),
            # An empty dpkg status: resolve as for an empty system, ignoring what the host has.
            *("-o", f"Dir::State::status={f / 'status'}"),
            # The target's architecture as the only one, as on a device of that architecture.
            *("-o", f"APT::Architecture={self.arch}"),
            *("-o", f"APT::Architectures::={self.arch}"),
            # As root apt downloads as user _apt, who cannot write into root's cache folder.
            *("-o", "APT::Sandbox::User=root"),
        ]

    def update(self) -> None:
        """Write the state folder and fetch the suite's package lists (about 8 MB)."""
        for folder in ("empty", "lists/partial", "cache/archives/partial"):
            (self.folder / folder).mkdir(parents=True, exist_ok=True)
        (self.folder / "sources.list").write_text(self.suite.sources(debian_mirror()))
        (self.folder / "status").touch()
        if not Path(KEYRING).is_file():
            raise MissingToolError(f"{KEYRING} is missing: apt-get install debian-archive-keyring")
        self._run(["update"], f"apt-get update for {self.suite.name} {self.arch} failed")

    def resolve(self) -> list[DebPackage]:
        """The closure of the suite's packages, as apt would install it on an empty system."""
        command = ["--simulate", "--no-install-recommends", "install", *self.suite.packages]
        stdout = self._run(command, f"apt cannot resolve the {self.suite.name} userland")
        packages = [DebPackage(**m.groupdict()) for m in map(_INST.match, stdout.splitlines()) if m]
        names = {p.name for p in packages}
        if self.suite.python not in names:
            raise EmulationError(
                f"apt resolves python3 for {self.suite.name} {self.arch} without "
                f"{self.suite.python} (got {sorted(n for n in names if n.startswith('python3'))})"
            )
        return packages

    def download(self, packages: Sequence[DebPackage], folder: Path) -> list[Path]:
        """Fetch the .debs not already in ``folder`` (apt checks them against the signed lists)."""
        folder.mkdir(parents=True, exist_ok=True)
        missing = [f"{p.name}={p.version}" for p in packages if not (folder / p.filename).is_file()]
        if missing:
            self._run(["download", *missing], "apt-get download failed", cwd=folder)
        still = [p.filename for p in packages if not (folder / p.filename).is_file()]
        if still:
            raise EmulationError(f"apt-get download did not produce {', '.join(still)} in {folder}")
        return [folder / p.filename for p in packages]

    def _run(self, args: Sequence[str], message: str, *, cwd: Path | None = None) -> str:
        command = ["apt-get", *self.options(), *args]
        try:
            result = subprocess.run(
                command, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False
            )
        except FileNotFoundError:
            message = "apt-get is not on PATH: a Debian-based host is needed"
            raise MissingToolError(message) from None
        except subprocess.TimeoutExpired as exc:
            raise EmulationError(f"{message}: timed out", command=command) from exc
        if result.returncode != 0:
            raise EmulationError(
                message, command=command, returncode=result.returncode, stderr=result.stderr
            )
        return result.stdout

"""The machines a bundle can carry a library for, and which one this process runs on."""

from __future__ import annotations

import os
import sys

from .records import record

__all__ = ["MIN_PYTHON", "TARGETS", "Target", "host_target", "target_mismatch"]

# Lets a user force a choice (for example a 32-bit userland the probe below gets wrong).
TARGET_ENV_VAR = "EDGEBOOST_TARGET"

# The oldest Python a device may run the runtime on: Debian 11 and Raspberry Pi OS bullseye ship
# 3.9. It lives here, with the other facts about the device's process, so that the Greengrass
# recipe can check it on the device before anything else. It is not pyproject's requires-python
# (3.10), which is for the whole distribution: the build host's tools (compile, package, broker).
# So what a device runs (compile/runtime_tree.py) is written for 3.9, for what that costs:
# no zip(strict=...), no isinstance(x, A | B) and
# no X | Y outside annotations (they are strings there: `from __future__ import annotations`).
# ruff lints those files as 3.9 code (pyproject); tests/test_device_e2e.py runs them on 3.9.
MIN_PYTHON = (3, 9)


@record
class Target:
    triple: str
    # Values of os.uname().machine (platform.machine()) a process of this target reports.
    machines: tuple[str, ...]
    pointer_bits: int
    # The Greengrass recipe's Platform "architecture", as both Nuclei report it: from the
    # bitness of the Nucleus process itself (the JVM's os.arch, or the architecture nucleus
    # lite was compiled for), never from `uname -m`.
    greengrass_architecture: str


TARGETS: dict[str, Target] = {
    t.triple: t
    for t in (
        Target("x86_64-linux-gnu", ("x86_64", "amd64"), 64, "amd64"),
        Target("aarch64-linux-gnu", ("aarch64", "arm64"), 64, "aarch64"),
        # A 32-bit userland on a 64-bit kernel reports armv8l, or even aarch64 (see below).
        Target("armv7-linux-gnueabihf", ("armv7l", "armv8l"), 32, "arm"),
    )
}


def host_target(machine: str | None = None, pointer_bits: int | None = None) -> str:
    """Return the triple of the library this Python process can load.

    Raises LookupError with the machine name when no target fits.
    """
    forced = os.environ.get(TARGET_ENV_VAR)
    if forced:
        if forced not in TARGETS:
            raise LookupError(f"{TARGET_ENV_VAR}={forced!r} is not one of {sorted(TARGETS)}")
        return forced
    machine = (machine or os.uname().machine).lower()
    if pointer_bits is None:
        pointer_bits = 64 if sys.maxsize > 2**32 else 32
    # Raspberry Pi OS ships 32-bit userlands on 64-bit kernels: uname says aarch64, but only
    # an armhf library can be loaded into a 32-bit Python.
    if machine in ("aarch64", "arm64") and pointer_bits == 32:
        return "armv7-linux-gnueabihf"
    for target in TARGETS.values():
        if machine in target.machines:
            return target.triple
    raise LookupError(
        f"no edgeboost target for machine {machine!r} ({pointer_bits}-bit); "
        f"known targets: {sorted(TARGETS)}"
    )


def target_mismatch(
    triple: str, machine: str | None = None, pointer_bits: int | None = None
) -> str | None:
    """None if this process loads ``triple`` libraries, else one line saying why not.

    The recipe's Install step runs this (``sys.exit(target_mismatch(...))``) with the triple of
    the zip the Nucleus chose. The Nucleus chooses by its own process (a 64-bit JVM next to a
    32-bit python3, or an ARMv6 board that reports plain "arm", both get a zip this process
    cannot load), so the mismatch fails the deployment at Install, not at the first request.
    """
    try:
        host = host_target(machine, pointer_bits)
    except LookupError as exc:
        return f"edgeboost-runtime-{triple}.zip cannot run here: {exc}"
    if host == triple:
        return None
    return (
        f"edgeboost-runtime-{triple}.zip cannot run here: this python3 loads {host} libraries (the "
        f"Nucleus picks the zip by its own architecture: run it and python3 with the same bitness)"
    )

"""Errors of the build host side; they hang under edgeboost.runtime.exceptions.EdgeboostError."""

from __future__ import annotations

from collections.abc import Sequence

from edgeboost.runtime.exceptions import EdgeboostError

__all__ = [
    "EmulationError",
    "MissingExtraError",
    "MissingToolError",
    "PackagingError",
    "ParityError",
    "ToolchainError",
    "UnsupportedModelError",
]


class UnsupportedModelError(EdgeboostError):
    """The booster uses an objective or feature edgeboost does not compile (yet)."""


class MissingExtraError(EdgeboostError, ImportError):
    """A host-side dependency is not installed; the message says which pip command fixes it."""


class PackagingError(EdgeboostError):
    """A bundle cannot be packaged as asked (bad component name or version, no library...)."""


class ToolchainError(EdgeboostError):
    """A compiler is missing, or a compile command failed."""

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] | None = None,
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        details = []
        if command is not None:
            details.append("command: " + " ".join(command))
        if returncode is not None:
            details.append(f"exit code: {returncode}")
        if stderr.strip():
            details.append("stderr:\n" + _tail(stderr))
        super().__init__("\n".join([message, *details]))
        self.command = list(command) if command is not None else None
        self.returncode = returncode
        self.stderr = stderr


class EmulationError(ToolchainError):
    """Building or running a target's program on this machine failed (compile/emulation.py)."""


class MissingToolError(EmulationError):
    """A tool is missing (qemu, cross compiler, target libc, apt); says what to install."""


class ParityError(EdgeboostError):
    """A built library predicts differently from XGBoost."""


def _tail(text: str, lines: int = 40) -> str:
    kept = text.strip().splitlines()
    if len(kept) > lines:
        kept = [f"... ({len(kept) - lines} earlier lines)", *kept[-lines:]]
    return "\n".join(kept)

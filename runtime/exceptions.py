"""Every error edgeboost raises, in one tree.

::

    EdgeboostError                  root; never raised itself
    ├── BundleError                 a bundle cannot be used as it is on disk
    │   ├── ManifestError           manifest.json is missing, unreadable or malformed
    │   ├── IntegrityError          a file's sha256 differs from the one recorded for it
    │   ├── MetadataMismatchError   the library cannot be loaded or disagrees with the manifest
    │   └── NoLibraryForPlatformError  the bundle has no library for this machine
    ├── NativeError                 the native library returned an error code
    ├── InputError                  rows handed to predict() are not usable (also ValueError)
    │   └── FeatureNameError        named features do not match the model's feature names
    ├── RequestError                a serving request is malformed (carries a stable code)
    ├── IpcError                    a Greengrass IPC call failed
    │   ├── IpcRefusedError         the IPC server answered with a modelled error
    │   ├── IpcNotSentError         nothing was sent (no connection): safe to send again
    │   └── IpcUnconfirmedError     sent, but no answer came (timeout, connection lost): not resent
    └── (compile side, in edgeboost.compile.errors)
        ├── UnsupportedModelError   the booster uses something edgeboost does not support
        ├── ToolchainError          a compiler is missing or failed
        ├── PackagingError          a bundle cannot be packaged as asked
        └── ParityError             the built library disagrees with XGBoost

Messages say what was expected and what was found, and name the file involved.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "EdgeboostError",
    "FeatureNameError",
    "InputError",
    "IntegrityError",
    "IpcError",
    "IpcNotSentError",
    "IpcRefusedError",
    "IpcUnconfirmedError",
    "LibraryLoadError",
    "ManifestError",
    "MetadataMismatchError",
    "NativeError",
    "NoLibraryForPlatformError",
    "RequestError",
]


class EdgeboostError(Exception):
    """Root of every edgeboost error. Catch this to catch them all."""


class BundleError(EdgeboostError):
    """A bundle on disk cannot be used."""


class ManifestError(BundleError):
    """manifest.json is missing, unreadable, or does not follow the schema."""


class IntegrityError(BundleError):
    """A file's content differs from the sha256 recorded for it."""


class MetadataMismatchError(BundleError):
    """The native library cannot be loaded (truncated, not ELF, another ABI), or its own
    metadata disagrees with the manifest."""


class LibraryLoadError(BundleError):
    """The library is intact but this machine cannot load it (dlopen failed: wrong
    architecture or C library, a missing symbol)."""


class NoLibraryForPlatformError(BundleError):
    """The bundle holds no library for the machine the runtime runs on."""


class NativeError(EdgeboostError):
    """The native library returned a non-zero status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"native predict failed with status {status}: {message}")
        self.status = status


class InputError(EdgeboostError, ValueError):
    """Rows handed to ``predict`` cannot be turned into a float32 matrix of the right width."""


class FeatureNameError(InputError):
    """Rows given as objects do not carry exactly the model's feature names."""


class RequestError(EdgeboostError):
    """A serving request cannot be answered; ``code`` is stable and machine-readable."""

    def __init__(self, code: str, message: str, *, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # The request's id when it could be read, so the error reply can carry it.
        self.request_id = request_id


class IpcError(EdgeboostError):
    """A Greengrass IPC call failed."""


class IpcRefusedError(IpcError):
    """The IPC server answered with a modelled error: ``error`` is its model name
    (``UnauthorizedError``, ``InvalidArgumentsError``, ``ResourceNotFoundError``,
    ``ServiceError``, or ``AccessDenied`` for a refused CONNECT). Never a lost connection."""

    def __init__(self, error: str, operation: str, message: str, *, topic: str | None = None):
        where = f" on {topic!r}" if topic is not None else ""
        super().__init__(f"{operation}{where} refused with {error}: {message}")
        self.error = error
        self.operation = operation
        self.topic = topic


class IpcNotSentError(IpcError):
    """The message was provably not sent (no connection, or the write failed): safe to resend."""


class IpcUnconfirmedError(IpcError):
    """The message may have been sent but no answer came: resending could duplicate it."""

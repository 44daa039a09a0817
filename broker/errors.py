"""Modeled Greengrass IPC errors, serialized the way the Nucleus's Java model does.

The Java ``EventStreamOperationError`` carries ``_service``, ``_message`` and ``_errorCode``
next to the shape's own ``message``; the awsiotsdk client reads ``message`` and ignores the rest.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "SERVICE_NAME",
    "FailedUpdateConditionCheckError",
    "InvalidArgumentsError",
    "IpcError",
    "MalformedRequest",
    "ResourceNotFoundError",
    "ServiceError",
    "UnauthorizedError",
]

SERVICE_NAME = "aws.greengrass#GreengrassCoreIPC"


class IpcError(Exception):
    """An error the client receives as an APPLICATION_ERROR of a known model type."""

    error_code: ClassVar[str] = "ServiceError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @classmethod
    def model_type(cls) -> str:
        return f"aws.greengrass#{cls.error_code}"

    def payload(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "_service": SERVICE_NAME,
            "_message": self.message,
            "_errorCode": self.error_code,
        }


class ServiceError(IpcError):
    error_code = "ServiceError"


class UnauthorizedError(IpcError):
    error_code = "UnauthorizedError"


class InvalidArgumentsError(IpcError):
    error_code = "InvalidArgumentsError"


class ResourceNotFoundError(IpcError):
    """The model also has ``resourceType`` and ``resourceName``; the configuration operations
    leave them unset (ConfigStoreIPCEventStreamAgent), so they are not sent."""

    error_code = "ResourceNotFoundError"


class FailedUpdateConditionCheckError(IpcError):
    error_code = "FailedUpdateConditionCheckError"


class MalformedRequest(Exception):
    """A request the Nucleus could not deserialize; the client gets a bare InternalServerError,
    so the reason only appears in the broker's log."""

"""The error base every layer raises: a message, an HTTP status code and a kind. service/api/errors.py renders
them as {"error": kind, "detail": message}; nothing here depends on the web framework."""

from __future__ import annotations


class ServiceError(Exception):
    """A client-visible error. Pickle-safe: every constructor argument is kept in args."""

    status_code: int = 400
    kind: str = "BadRequest"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, status_code: int | None = None, kind: str | None = None):
        super().__init__(message, status_code, kind)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if kind is not None:
            self.kind = kind

    def __str__(self) -> str:
        return self.message


class NotFoundError(ServiceError):
    status_code, kind = 404, "NotFound"


class ConflictError(ServiceError):
    status_code, kind = 409, "Conflict"


class PayloadTooLargeError(ServiceError):
    status_code, kind = 413, "PayloadTooLarge"


class UnsupportedMediaError(ServiceError):
    status_code, kind = 415, "UnsupportedMediaType"


class ValidationError(ServiceError):
    status_code, kind = 422, "ValidationError"


class AuthError(ServiceError):
    status_code, kind = 401, "Unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ServiceError):
    status_code, kind = 403, "Forbidden"


class TooManyRequestsError(ServiceError):
    status_code, kind = 429, "TooManyRequests"


class InsufficientStorageError(ServiceError):
    """507: the disk is full, or the team's storage quota is used up."""

    status_code, kind = 507, "InsufficientStorage"


class UnavailableError(ServiceError):
    status_code, kind = 503, "ServiceUnavailable"

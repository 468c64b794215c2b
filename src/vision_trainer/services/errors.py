"""Domain errors raised by the services; the API maps each class to an HTTP status in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc as sa


class ServiceError(Exception):
    """``detail`` says what was wrong and how to fix it; ``code`` is a stable snake_case name."""

    code = "error"

    def __init__(self, detail: str, *, code: str | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.errors = errors


class InvalidRequest(ServiceError):
    """The request is well-formed but cannot be carried out as asked (HTTP 422)."""

    code = "invalid_request"


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    """The resource is in a state that forbids the action (HTTP 409)."""

    code = "conflict"


class Unavailable(ServiceError):
    """A dependency (database, data dir) cannot be used right now (HTTP 503)."""

    code = "unavailable"


class TooManyRequests(ServiceError):
    """Over a configured bound; retry later (HTTP 429 with Retry-After)."""

    code = "too_many_requests"


class InsufficientStorage(ServiceError):
    """The data dir is full (HTTP 507)."""

    code = "storage_full"


class PayloadTooLarge(ServiceError):
    """A file or request over a configured size (HTTP 413)."""

    code = "file_too_large"


def is_database_outage(exc: BaseException) -> bool:
    """The database cannot be reached or dropped the connection (as opposed to a bug in a query): worth
    answering 503 and worth retrying."""
    return isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.TimeoutError)) or (
        isinstance(exc, sa.DBAPIError) and exc.connection_invalidated
    )

"""Domain errors raised by the services; the API maps each class to an HTTP status in one place."""

from __future__ import annotations

from typing import Any


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

"""Every error leaves as JSON ``{"detail", "code"}`` (plus ``errors`` for bad training files)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..ml.errors import ImageTooLargeError, MLError, UnsupportedFormatError
from ..ml.exports import ExportError
from ..services.errors import (
    Conflict,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    TooManyRequests,
    Unavailable,
    is_database_outage,
)

log = logging.getLogger(__name__)

_SERVICE_STATUS: dict[type[ServiceError], int] = {
    InvalidRequest: 422,
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
    TooManyRequests: 429,
    PayloadTooLarge: 413,
    InsufficientStorage: 507,
}
_HTTP_CODES = {
    400: "invalid_form",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


class BodyRefused(StarletteHTTPException):
    """A request body refused while it streams (too large, too slow); the connection is then closed.

    An HTTPException, so FastAPI's body parsing passes it through instead of calling it a parse error."""

    def __init__(self, status_code: int, detail: str, code: str) -> None:
        super().__init__(status_code=status_code, detail=detail, headers={"Connection": "close"})
        self.code = code


def error_response(
    status: int, detail: str, code: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    headers = {**({"Retry-After": "5"} if status in (429, 503) else {}), **(headers or {})}
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status, headers=headers or None)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    status = next((s for cls, s in _SERVICE_STATUS.items() if isinstance(exc, cls)), 400)
    if exc.errors is not None:
        return error_response(status, exc.detail, exc.code, errors=exc.errors)
    return error_response(status, exc.detail, exc.code)


async def _ml_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MLError)
    status = (
        415
        if isinstance(exc, UnsupportedFormatError)
        else 413
        if isinstance(exc, ImageTooLargeError)
        else 500
        if isinstance(exc, ExportError)
        else 422
    )
    return error_response(status, str(exc), exc.code)


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
    got = error.get("input")
    shown = f" (got {got!r})" if isinstance(got, (str, int, float)) and len(str(got)) < 80 else ""
    return f"{where or 'request'}: {error.get('msg', 'invalid')}{shown}"


_UNKNOWN_KEY_ERRORS = ("unknown_field", "extra_forbidden")


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    unknown = [e for e in exc.errors() if e.get("type") in _UNKNOWN_KEY_ERRORS]
    if unknown:  # a misspelt key: name it (the schemas' own message suggests the closest valid one)
        details = [e["msg"] if e["type"] == "unknown_field" else _describe(e) for e in unknown]
        return error_response(422, "; ".join(details), "unknown_field")
    details = [_describe(e) for e in exc.errors()]
    return error_response(422, "; ".join(details), "invalid_parameter")


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if isinstance(exc, BodyRefused):
        return error_response(exc.status_code, detail, exc.code, headers=exc.headers)
    if exc.status_code == 400 and detail.startswith("Too many files"):
        # Starlette's multipart parser reports its file-count limit as a plain 400.
        return error_response(413, f"{detail} (VT_MAX_FILES)", "too_many_files")
    if exc.status_code == 413:
        detail = "request body is larger than VT_MAX_REQUEST_MB allows"
    response = error_response(exc.status_code, detail, _HTTP_CODES.get(exc.status_code, "http_error"))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _client_gone(_: Request, exc: Exception) -> JSONResponse:
    # Nobody will read this answer; the upload's temporary files are already gone with the form.
    log.info("client disconnected during the request")
    return error_response(400, "the client disconnected before the request was complete", "client_disconnected")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_outage(exc):
        return await _unexpected(request, exc)
    # The pool checks connections before use (pool_pre_ping), so the next request after the database
    # is back gets a fresh connection: nothing to reset here.
    reason = (str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__).splitlines()[0][:300]
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, reason)
    return error_response(503, "the database is unavailable right now; retry in a few seconds", "database_unavailable")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error; the server log has the details", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(MLError, _ml_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(sa.DBAPIError, _database_error)
    app.add_exception_handler(sa.TimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected)

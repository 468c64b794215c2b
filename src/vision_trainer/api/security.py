"""API keys: when ``VT_API_KEYS`` is set, protected routes need ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..settings import Settings
from .deps import SettingsDep
from .errors import error_response


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key")


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    """Dependency of every protected router; does nothing when no keys are configured.

    ``async`` although it never waits: a plain function would run in the thread pool, one thread hop
    per request, and a crowd opening event streams at once made those hops fight over the GIL."""
    keys = settings.api_key_list
    if not keys:
        return
    if not key_matches(_presented_key(request), keys):
        raise HTTPException(status_code=401, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


# --- the guard every request passes before any route (and before its body is read) ---------------

PUBLIC_PATHS = ("/", "/health/live", "/health/ready", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")
PUBLIC_PREFIXES = ("/ui/", "/docs/")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# The page loads only its own files; previews of chosen photos are blob: URLs; charts set inline styles.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# JSON, photos, checkpoints, report pictures: nothing in them may run, even when opened as a page.
FILE_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
DOCS_POLICY = "frame-ancestors 'none'"  # the OpenAPI pages load their scripts from a CDN


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path == "/ui" or path.startswith(PUBLIC_PREFIXES)


def key_matches(presented: str | None, keys: list[str]) -> bool:
    """Constant-time comparison against every key, so the time taken does not reveal which one matched."""
    encoded = (presented or "").encode()
    return any([hmac.compare_digest(encoded, key.encode()) for key in keys])


def host_name(host_header: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _policy(path: str) -> str:
    if path == "/ui" or path.startswith("/ui/"):
        return PAGE_POLICY
    if path.startswith(("/docs", "/redoc")):
        return DOCS_POLICY
    return FILE_POLICY


class RequestGuard:
    """ASGI middleware run before routing: answers only allowed Host names (DNS rebinding), refuses
    state-changing requests from other sites when the server has no API keys (a web page can make a
    browser send forms anywhere), checks the API key from the headers before any body is read, and
    adds security headers to every answer."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.keys = settings.api_key_list
        hosts = settings.allowed_host_list
        self.any_host = "*" in hosts
        self.hosts = set(hosts)
        self.cors_origins = {origin.rstrip("/").lower() for origin in settings.cors_origin_list}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        refusal = self._refusal(scope, Headers(scope=scope))
        policy = _policy(path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Content-Security-Policy", policy)
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        host = host_name(headers.get("host", ""))
        if not self.any_host and host not in self.hosts:
            return _close(
                error_response(
                    400,
                    f"this server does not answer for host {host!r}; add it to VT_ALLOWED_HOSTS",
                    "invalid_host",
                )
            )
        method = scope.get("method", "GET")
        if not self.keys and method not in SAFE_METHODS and self._cross_site(headers):
            return _close(
                error_response(
                    403,
                    "cross-site request refused: without API keys (VT_API_KEYS) only pages of this server or "
                    "origins in VT_CORS_ORIGINS may change data",
                    "cross_site_request",
                )
            )
        path = scope.get("path", "")
        if self.keys and method != "OPTIONS" and not is_public(path):
            if not key_matches(_presented_key_from(headers), self.keys):
                response = _close(error_response(401, UNAUTHORIZED, "unauthorized"))
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return None

    def _cross_site(self, headers: Headers) -> bool:
        origin = headers.get("origin")
        if origin is not None:
            origin = origin.rstrip("/").lower()
            if origin in self.cors_origins:
                return False
            if origin == "null":  # sandboxed frames, file:// pages, redirects across sites
                return True
            return _netloc(origin) != _strip_default_port(headers.get("host", "").lower(), scheme_of(origin))
        site = headers.get("sec-fetch-site")
        return site is not None and site not in ("same-origin", "none")


UNAUTHORIZED = "missing or wrong API key: send Authorization: Bearer <key> or X-API-Key: <key>"


def _presented_key_from(headers: Headers) -> str | None:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key")


def scheme_of(origin: str) -> str:
    return origin.partition("://")[0]


def _netloc(origin: str) -> str:
    scheme, _, rest = origin.partition("://")
    return _strip_default_port(rest.partition("/")[0], scheme)


def _strip_default_port(netloc: str, scheme: str) -> str:
    default = {"http": ":80", "https": ":443"}.get(scheme)
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


def _close(response: JSONResponse) -> JSONResponse:
    # The body, if any, is never read: the connection cannot be reused for the next request.
    response.headers["Connection"] = "close"
    return response

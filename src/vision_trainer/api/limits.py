"""Refuse request bodies over their limit with 413 while they stream, before they are stored, and
drop clients that send their body too slowly.

Routes that take uploads may receive up to ``VT_MAX_REQUEST_MB``; every other route (JSON bodies,
small forms) at most ``VT_MAX_BODY_KB``. A declared Content-Length over the limit is refused before
any of the body is read; a body without one (chunked), or longer than it claimed, is cut off as soon
as the bytes received pass the limit. A body whose next piece does not come within
``VT_BODY_TIMEOUT_S``, or that arrives slower than ``VT_MIN_UPLOAD_RATE_KB`` on average after the
first ``VT_BODY_TIMEOUT_S``, is refused with 408 and the connection closed.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BodyRefused, error_response

# POST routes whose bodies carry photos, archives or checkpoints.
UPLOAD_ROUTES = re.compile(r"^/(train|compare|predict|predict/batch|models/import|datasets/[^/]+/images)/?$")


def _too_large(max_bytes: int, setting: str) -> BodyRefused:
    return BodyRefused(413, f"request body is larger than {setting} allows ({max_bytes} bytes)", "request_too_large")


def _too_slow(timeout: float, min_rate: float) -> BodyRefused:
    return BodyRefused(
        408,
        f"the request body came too slowly (a pause over {timeout:g} s, VT_BODY_TIMEOUT_S, or under "
        f"{min_rate / 1024:g} KiB/s on average, VT_MIN_UPLOAD_RATE_KB); nothing was kept",
        "request_timeout",
    )


@dataclass(frozen=True)
class BodyLimits:
    max_upload_bytes: int
    max_body_bytes: int
    body_timeout_s: float = 30.0
    min_rate_bytes_s: float = 0.0

    def for_request(self, scope: Scope) -> tuple[int, str]:
        if scope.get("method") == "POST" and UPLOAD_ROUTES.match(scope.get("path", "")):
            return self.max_upload_bytes, "VT_MAX_REQUEST_MB"
        return self.max_body_bytes, "VT_MAX_BODY_KB"


class RequestSizeLimit:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self.limits.for_request(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            await _answer(_too_large(max_bytes, setting), scope, receive, send)
            return
        received = 0
        started = False
        began = time.monotonic()
        timeout = self.limits.body_timeout_s
        min_rate = self.limits.min_rate_bytes_s

        async def guarded_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                raise _too_slow(timeout, min_rate) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _too_large(max_bytes, setting)
                elapsed = time.monotonic() - began
                if min_rate and message.get("more_body") and elapsed > timeout and received < min_rate * elapsed:
                    raise _too_slow(timeout, min_rate)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except BodyRefused as exc:  # raised where no exception handler turned it into an answer
            if started:
                raise
            await _answer(exc, scope, receive, send)


async def _answer(exc: BodyRefused, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(exc.status_code, str(exc.detail), exc.code, headers=exc.headers)
    await response(scope, receive, send)

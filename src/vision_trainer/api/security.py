"""API keys: when ``VT_API_KEYS`` is set, protected routes need ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from .deps import SettingsDep


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
    presented = (_presented_key(request) or "").encode()
    # Compare against every key so the time taken does not reveal which one (if any) matched.
    matches = [hmac.compare_digest(presented, key.encode()) for key in keys]
    if not any(matches):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API key: send Authorization: Bearer <key> or X-API-Key: <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )

"""Running the API under uvicorn with bounds on slow and numerous clients.

uvicorn closes idle keep-alive connections but waits forever for a request's headers, and accepts any
number of connections. The protocol below closes a connection whose request line and headers take
longer than ``VT_HEADER_TIMEOUT_S`` (also on a kept-alive connection) and closes new connections at
once while ``VT_MAX_CONNECTIONS`` are open. Slow bodies are the app's business (``api.limits``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..settings import Settings, get_settings

log = logging.getLogger("vision_trainer")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection bound."""

    header_timeout_s: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("closing a new connection: %d are open (VT_MAX_CONNECTIONS)", len(self.connections) - 1)
            transport.abort()
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            if self._header_timer is None:  # the next request of a kept-alive connection is starting
                self._arm_header_timer()
        else:
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        self._disarm_header_timer()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()  # nothing half-answered: a plain close, like uvicorn's keep-alive timeout


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """The protocol class with this server's bounds."""
    return type(
        "BoundedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_s": settings.header_timeout_s, "max_connections": settings.max_connections},
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What ``vision-trainer serve`` passes to ``uvicorn.run`` besides the app, host and port."""
    return {
        "http": guarded_protocol(settings),
        "timeout_keep_alive": 5,
        # Requests in flight beyond this get uvicorn's 503 instead of piling up.
        "limit_concurrency": settings.max_connections,
        "log_level": settings.log_level,
    }


def serve(settings: Settings, *, host: str, port: int, reload: bool = False) -> None:
    """Run the API until interrupted (the body of ``vision-trainer serve``)."""
    options = uvicorn_options(settings)
    if reload:  # uvicorn's reloader imports the app in a child process and needs its default protocol there
        options.pop("http")
    uvicorn.run("vision_trainer.api.app:create_app", factory=True, host=host, port=port, reload=reload, **options)


if __name__ == "__main__":
    current = get_settings()
    logging.basicConfig(level=current.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    serve(current, host=current.host, port=current.port)

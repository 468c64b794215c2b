"""Live updates in the API process: the job event hub, the shared list answers, and what feeds them.

Commits of this process (jobs the local runner trains, cancels, the sweep) reach the hub directly;
under Celery the workers' commits arrive through the queue's Redis subscription.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send

from ..services.commits import Commit, watch_commits
from ..services.context import Services
from ..services.events import JobEventHub, Subscription
from .cache import SharedAnswers

log = logging.getLogger(__name__)

PING_S = 15  # keeps proxies from closing a quiet stream
STUCK_CLIENT_S = 30  # a stream whose client has not taken a byte for this long is closed


def encode_event(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    return ServerSentEvent(data=json.dumps(data), event=kind, id=str(event_id)).encode()


class LiveUpdates:
    """Owns the hub and the shared list answers of one app; ``start()`` in its lifespan, ``close()`` after."""

    def __init__(self, services: Services, queue: Any) -> None:
        self.services, self.queue = services, queue
        self.events = JobEventHub(services.db, encode_event, max_streams=services.settings.max_event_streams)
        self.lists = SharedAnswers()
        self.streams: set[EventStreamResponse] = set()
        self._unwatch: Callable[[], None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.events.start()
        self._unwatch = watch_commits(self.services.db, self._committed)
        follow = getattr(self.queue, "follow_events", None)
        if follow is not None:  # Celery: the workers' events come through the broker
            follow(self._remote, self.events.notify_all)
        self._watchdog = asyncio.get_running_loop().create_task(self._close_stuck_streams())

    async def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.events.close()

    async def _close_stuck_streams(self) -> None:
        """A client that stopped reading holds its stream (and a VT_MAX_EVENT_STREAMS slot) until this
        closes it; nothing else waits for it."""
        while True:
            await asyncio.sleep(STUCK_CLIENT_S / 4)
            now = time.monotonic()
            for stream in list(self.streams):
                since = stream.sending_since
                if since is not None and now - since > STUCK_CLIENT_S:
                    log.info(
                        "closing an event stream of job %s: its client took nothing for %d s",
                        stream.subscription.job_id,
                        STUCK_CLIENT_S,
                    )
                    stream.cancel_scope.cancel()

    def _committed(self, commit: Commit) -> None:
        self.lists.invalidate()
        if commit.job_ids:
            self.events.notify(commit.job_ids)

    def _remote(self, job_ids: Iterable[str]) -> None:
        self.lists.invalidate()
        self.events.notify(job_ids)


async def _payloads(sub: Subscription) -> AsyncIterator[bytes]:
    async for batch in sub.batches():
        yield b"".join(item.payload for item in batch)


class EventStreamResponse(EventSourceResponse):
    """Server-Sent Events of one subscription; frees it when the response ends, however it ends.

    ``sending_since`` is when a write to the client began that has not finished yet (None while
    idle), so that ``LiveUpdates`` can close streams whose client stopped reading. (sse-starlette's
    own ``send_timeout`` does the same with a cancel scope per write, a quarter of a write's cost.)
    """

    def __init__(self, sub: Subscription, live: LiveUpdates) -> None:
        super().__init__(_payloads(sub), ping=PING_S)
        self.subscription, self.live = sub, live
        self.sending_since: float | None = None
        self.cancel_scope = anyio.CancelScope()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed_send(message: Message) -> None:
            self.sending_since = time.monotonic()
            await send(message)
            self.sending_since = None

        self.live.streams.add(self)
        try:
            with self.cancel_scope:
                await super().__call__(scope, receive, timed_send)
        finally:
            self.live.streams.discard(self)
            self.subscription.close()

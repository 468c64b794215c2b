"""Live updates in the API process: the job event hub, the shared list answers, and what feeds them.

Commits of this process (jobs the local runner trains, cancels, the sweep) reach the hub directly;
under Celery the workers' commits arrive through the queue's Redis subscription.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.types import Receive, Scope, Send

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
        self._unwatch: Callable[[], None] | None = None

    def start(self) -> None:
        self.events.start()
        self._unwatch = watch_commits(self.services.db, self._committed)
        follow = getattr(self.queue, "follow_events", None)
        if follow is not None:  # Celery: the workers' events come through the broker
            follow(self._remote, self.events.notify_all)

    async def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        await self.events.close()

    def _committed(self, commit: Commit) -> None:
        self.lists.invalidate()
        if commit.job_ids:
            self.events.notify(commit.job_ids)

    def _remote(self, job_ids: Iterable[str]) -> None:
        self.lists.invalidate()
        self.events.notify(job_ids)


async def _payloads(sub: Subscription) -> AsyncIterator[bytes]:
    async for item in sub.events():
        yield item.payload


class EventStreamResponse(EventSourceResponse):
    """Server-Sent Events of one subscription; frees it when the response ends, however it ends."""

    def __init__(self, sub: Subscription) -> None:
        super().__init__(_payloads(sub), ping=PING_S, send_timeout=STUCK_CLIENT_S)
        self.subscription = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("closed an event stream of job %s: its client took nothing for %d s",
                     self.subscription.job_id, STUCK_CLIENT_S)
        finally:
            self.subscription.close()

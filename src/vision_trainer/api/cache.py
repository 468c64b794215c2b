"""One answer for many tabs: list endpoints share a computed answer for a moment.

Every open web page asks for the same lists (the page reloads its model list when a job it watched
ends, so a crowd watching one job asks at the same instant). Requests that arrive while an answer
is being computed, or within ``ttl_s`` after, get that answer instead of a database round trip of
their own. Any write committed in this process, or a notification of a worker's job events, makes
the next request compute afresh, so a client never sees a list older than its own last change.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

LIST_TTL_S = 1.0
MAX_ENTRIES = 64


@dataclass
class _Entry:
    generation: int
    started: float
    answer: asyncio.Future[Any]


class SharedAnswers:
    """A tiny TTL cache with single flight, cleared by ``invalidate()`` (thread-safe)."""

    def __init__(self, ttl_s: float = LIST_TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self.generation = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def invalidate(self) -> None:
        self.generation += 1

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is None or entry.generation != self.generation or now - entry.started > self.ttl_s:
            entry = _Entry(self.generation, now, asyncio.ensure_future(compute()))
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        try:
            # shield: one caller going away must not cancel the answer the others wait for
            return await asyncio.shield(entry.answer)
        except Exception:
            if self._entries.get(key) is entry:
                del self._entries[key]
            raise


async def shared_answer(request: Request, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
    """The app's shared answer for ``key`` (computed by ``compute`` when there is none fresh)."""
    answers: SharedAnswers = request.app.state.live.lists
    return await answers.get(key, compute)

"""The hub: every live event stream of this process, one channel per watched job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ...store.db import Database
from ..errors import NotFound, Unavailable
from .channel import Channel, Subscription
from .reads import Encoder

QUEUE_SIZE = 64  # batches of live events (one per database read) a subscriber may hold unsent before it is dropped
SAFETY_POLL_S = 5.0  # a watched job's channel reads the database at least this often
READ_CONCURRENCY = 4  # database reads of the hub in flight at once


class JobEventHub:
    """Every live event stream of this process, grouped into one channel per job.

    Create it, ``start()`` it inside the event loop, feed it ``notify(job_ids)`` from any thread, and
    ``close()`` it at shutdown.

    Args:
        db: Where the events are.
        encode: ``(event id, kind, data) -> payload``, run once per event for all streams.
        max_streams: Streams open at once beyond which ``open`` raises ``Unavailable``.
        queue_size: Batches of live events (one per read) one stream may hold unsent before it is dropped.
        poll_s: Longest time a watched job's channel goes without reading the database.
    """

    def __init__(
        self,
        db: Database,
        encode: Encoder,
        *,
        max_streams: int,
        queue_size: int = QUEUE_SIZE,
        poll_s: float = SAFETY_POLL_S,
    ) -> None:
        self.db, self.encode = db, encode
        self.max_streams, self.queue_size, self.poll_s = max_streams, queue_size, poll_s
        self.channels: dict[str, Channel] = {}
        self.open_streams = 0
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reads: asyncio.Semaphore | None = None

    def start(self) -> None:
        """Bind to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._reads = asyncio.Semaphore(READ_CONCURRENCY)

    async def close(self) -> None:
        """End every stream and stop every channel."""
        for channel in list(self.channels.values()):
            for sub in list(channel.subscribers):
                sub.end()
            channel.subscribers.clear()
            channel.detach()
        self._loop = None

    # -- notifications, from any thread --

    def notify(self, job_ids: Iterable[str]) -> None:
        """New events of ``job_ids`` were committed; thread-safe and cheap."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._wake, tuple(job_ids))
        except RuntimeError:  # the loop is closing
            pass

    def notify_all(self) -> None:
        """Notifications may have been missed (e.g. a reconnect): every channel reads now."""
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(lambda: self._wake(tuple(self.channels)))
            except RuntimeError:
                pass

    def _wake(self, job_ids: tuple[str, ...]) -> None:
        for job_id in job_ids:
            channel = self.channels.get(job_id)
            if channel is not None:
                channel.wake.set()

    # -- streams --

    async def open(self, job_id: str, after: int) -> Subscription:
        """A subscription to ``job_id``'s events after ``after``, its replay already read.

        Raises:
            Unavailable: ``max_streams`` streams are open (``too_many_streams``).
            NotFound: no such job.
        """
        if self.open_streams >= self.max_streams:
            raise Unavailable(
                f"{self.open_streams} event streams are open, the most this server keeps "
                "(VT_MAX_EVENT_STREAMS); retry later or follow GET /jobs/{id} instead",
                code="too_many_streams",
            )
        self.open_streams += 1
        sub = Subscription(self, job_id, after)
        try:
            channel = self.channels.get(job_id) or self._new_channel(job_id)
            channel.add(sub)
            await channel.ready.wait()
            if channel.failure is not None:
                raise channel.failure
            replay = await channel.replay(after)
            if replay is None:
                raise NotFound(f"no job with id {job_id!r}; GET /jobs lists them")
        except BaseException:
            sub.close()
            raise
        sub.replay = replay
        if replay:
            sub.last = replay[-1].id
            if replay[-1].final:
                sub.leave()  # nothing will follow
        return sub

    def _new_channel(self, job_id: str) -> Channel:
        channel = Channel(self, job_id)
        self.channels[job_id] = channel
        channel.task = asyncio.get_running_loop().create_task(channel.run(), name=f"vt-events-{job_id[:8]}")
        return channel

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking database read in a thread, at most ``READ_CONCURRENCY`` at once."""
        assert self._reads is not None, "JobEventHub.start() was not called"
        async with self._reads:
            return await asyncio.to_thread(fn, *args)

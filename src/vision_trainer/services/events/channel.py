"""The channel of one watched job and the subscriptions of its streams.

A channel reads the job's new events once per wake-up and hands them to each subscriber's bounded
queue; a subscription yields its replay, then those live events, without gap or repeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...store.db import Database
from .reads import Encoder, LiveEvent, read_events_after, read_last_event_id, read_replay

log = logging.getLogger(__name__)

COALESCE_S = 0.1  # a channel waits this long after a notification, so that commits close together go out
REPLAY_GATHER_S = 0.02  # streams joining a job within this long share one replay read


class Hub(Protocol):
    """What channels and subscriptions use of the hub that owns them (``hub.JobEventHub``)."""

    db: Database
    encode: Encoder
    queue_size: int
    poll_s: float
    channels: dict[str, Channel]
    open_streams: int
    dropped: int

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any: ...


class Subscription:
    """One stream's view of a job: its replay, then the live events after it.

    ``close()`` (idempotent) leaves the job's channel and frees the stream's slot; call it when the
    stream ends for any reason.
    """

    def __init__(self, hub: Hub, job_id: str, after: int) -> None:
        self.hub, self.job_id, self.last = hub, job_id, after
        self.replay: list[LiveEvent] = []
        self.queue: asyncio.Queue[list[LiveEvent] | None] = asyncio.Queue(hub.queue_size)
        self.ended = False  # no more live events will be queued (dropped, or the hub closed)
        self.dropped = False
        self.closed = False
        self._channel: Channel | None = None

    async def batches(self) -> AsyncIterator[list[LiveEvent]]:
        """The replay in one batch, then live events as they come, each batch holding what arrived
        together (one write to the client instead of one per event). Ends after the final status, or
        once a dropped subscriber has handed out what it holds."""
        replay = self.replay
        final = next((n for n, item in enumerate(replay) if item.final), None)
        if replay:
            yield replay if final is None else replay[: final + 1]
        if final is not None:
            return
        while not (self.ended and self.queue.empty()):
            batch, done = self._take(await self.queue.get())
            while not done and not self.queue.empty():
                more, done = self._take(self.queue.get_nowait())
                batch += more
            if batch:
                yield batch
            if done:
                return

    def _take(self, batch: list[LiveEvent] | None) -> tuple[list[LiveEvent], bool]:
        """The events of ``batch`` the replay did not have, up to the final status; and whether the
        stream is over."""
        if batch is None:
            return [], True
        taken = []
        for item in batch:
            if item.id <= self.last:  # already in the replay
                continue
            self.last = item.id
            taken.append(item)
            if item.final:
                return taken, True
        return taken, False

    def offer(self, batch: list[LiveEvent]) -> bool:
        """Queue live events without waiting; False when the queue is full."""
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            return False
        return True

    def end(self) -> None:
        """No more live events: the stream ends once the queue is handed out."""
        self.ended = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass  # the consumer sees ``ended`` once it has emptied the queue

    def leave(self) -> None:
        if self._channel is not None:
            self._channel.remove(self)
            self._channel = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.leave()
        self.hub.open_streams -= 1


@dataclass(eq=False)
class ReplayRead:
    """Streams waiting for the same replay read, which has not started yet."""

    after: int
    result: asyncio.Future[list[LiveEvent] | None]


@dataclass(eq=False)
class Channel:
    """The one subscription of this process to one job, shared by all its streams."""

    hub: Hub
    job_id: str
    subscribers: set[Subscription] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    cursor: int = 0  # the id of the last event handed out
    failure: BaseException | None = None
    task: asyncio.Task[None] | None = None
    next_replay: ReplayRead | None = None
    replay_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    replay_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, sub: Subscription) -> None:
        self.subscribers.add(sub)
        sub._channel = self

    def remove(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers:
            self.detach()

    def detach(self) -> None:
        if self.hub.channels.get(self.job_id) is self:
            del self.hub.channels[self.job_id]
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    async def replay(self, after: int) -> list[LiveEvent] | None:
        """The job's events after ``after`` (None: no such job), read after the caller joined.

        A crowd joining at once shares reads: one replay read runs at a time per job, and everyone who
        joins while it runs (or within ``REPLAY_GATHER_S`` before it) shares the next one.
        """
        read = self.next_replay
        if read is None:
            read = self.next_replay = ReplayRead(after, asyncio.get_running_loop().create_future())
            read.result.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if unused
            task = asyncio.get_running_loop().create_task(self._read_replay(read))
            self.replay_tasks.add(task)
            task.add_done_callback(self.replay_tasks.discard)
        read.after = min(read.after, after)
        events = await asyncio.shield(read.result)
        if events is None or read.after == after:
            return events
        return [item for item in events if item.id > after]

    async def _read_replay(self, read: ReplayRead) -> None:
        async with self.replay_lock:
            await asyncio.sleep(REPLAY_GATHER_S)
            self.next_replay = None  # who joins from now on needs a read that starts after joining
            try:
                read.result.set_result(
                    await self.hub.read(read_replay, self.hub.db, self.job_id, read.after, self.hub.encode)
                )
            except asyncio.CancelledError:
                read.result.cancel()
                raise
            except Exception as exc:
                read.result.set_exception(exc)

    async def run(self) -> None:
        try:
            self.cursor = await self.hub.read(read_last_event_id, self.hub.db, self.job_id)
        except Exception as exc:
            self.failure = exc
            self.ready.set()
            self.detach()
            return
        self.ready.set()
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), self.hub.poll_s)
            except TimeoutError:
                pass
            await asyncio.sleep(COALESCE_S)  # commits close together (an epoch's progress and log line) go out as one
            self.wake.clear()
            try:
                events = await self.hub.read(read_events_after, self.hub.db, self.job_id, self.cursor, self.hub.encode)
            except Exception:  # the database is away for a moment: the next wake or poll retries
                log.warning("job %s: reading new events failed", self.job_id, exc_info=True)
                continue
            if self.fan_out(events) or self.hub.channels.get(self.job_id) is not self:
                return  # the final status went out, or every subscriber left or was dropped

    def fan_out(self, events: list[LiveEvent]) -> bool:
        """Hand ``events`` (one read) to every subscriber as one batch; True once the job's final status
        went out."""
        if not events:
            return False
        self.cursor = events[-1].id
        for sub in list(self.subscribers):
            if not sub.offer(events):
                self.drop(sub)
        if not any(item.final for item in events):
            return False
        for sub in list(self.subscribers):
            sub._channel = None
        self.subscribers.clear()
        self.detach()
        return True

    def drop(self, sub: Subscription) -> None:
        log.info(
            "job %s: a stream fell %d reads behind; it ends and its client replays", self.job_id, self.hub.queue_size
        )
        self.hub.dropped += 1
        sub.dropped = True
        sub.end()
        self.remove(sub)
        sub._channel = None

"""Live job events for many watchers: one subscription per job, fanned out to every stream.

Events are rows in ``job_events``, written wherever a job moves on. The database stays the record;
what is added here is a way to learn *when* to read it:

- ``commits.watch_commits`` calls back after every commit of this process, with the ids of the jobs
  whose events that commit wrote. The API process feeds that to its ``JobEventHub`` directly (the
  local runner trains in the API process); a Celery worker publishes it on Redis and the API
  subscribes (``jobs/redis_events.py``).
- ``JobEventHub`` (API process, asyncio) keeps one channel per watched job. A notification wakes the
  channel, which reads the job's new events from the database once and puts them in the bounded queue
  of each of its subscribers. A subscriber whose queue is full is dropped: its stream ends once it has
  sent what it holds, and the client reconnects with ``Last-Event-ID``. A slow poll per channel (not per
  stream) covers a notification that never arrived.

A new stream joins the channel first, then reads its replay from the database, then takes live events
with an id above the last replayed one, so the hand-over neither loses nor repeats an event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..store import repository as repo
from ..store.db import Database
from ..store.tables import Job, JobEvent
from .errors import NotFound, Unavailable

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # batches of live events (one per database read) a subscriber may hold unsent before it is dropped
SAFETY_POLL_S = 5.0  # a watched job's channel reads the database at least this often
READ_CONCURRENCY = 4  # database reads of the hub in flight at once
COALESCE_S = 0.1  # a channel waits this long after a notification, so that commits close together go out
REPLAY_GATHER_S = 0.02  # streams joining a job within this long share one replay read
_PAGE = 500


# --- reads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveEvent:
    """One event of a job; ``payload`` is its wire form, encoded once for every stream."""

    id: int
    kind: str
    final: bool
    payload: bytes


Encoder = Callable[[int, str, dict[str, Any]], bytes]


def _live(row: JobEvent, encode: Encoder) -> LiveEvent:
    final = row.kind == "status" and row.data.get("status") in repo.FINAL_STATUSES
    return LiveEvent(id=row.id, kind=row.kind, final=final, payload=encode(row.id, row.kind, row.data))


def _last_event_id(db: Database, job_id: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id)) or 0


def _events_after(db: Database, job_id: str, after: int, encode: Encoder) -> list[LiveEvent]:
    with db.session() as session:
        return _pages(session, job_id, after, encode)


def _replay(db: Database, job_id: str, after: int, encode: Encoder) -> list[LiveEvent] | None:
    """The job's events after ``after``; None when there is no such job."""
    with db.session() as session:
        if session.scalar(select(Job.id).where(Job.id == job_id)) is None:
            return None
        return _pages(session, job_id, after, encode)


def _pages(session: Session, job_id: str, after: int, encode: Encoder) -> list[LiveEvent]:
    events: list[LiveEvent] = []
    while True:
        rows = repo.events_after(session, job_id=job_id, after_id=after, limit=_PAGE)
        events += [_live(row, encode) for row in rows]
        if len(rows) < _PAGE:
            return events
        after = rows[-1].id


# --- the hub -------------------------------------------------------------------------------------


class Subscription:
    """One stream's view of a job: its replay, then the live events after it.

    ``close()`` (idempotent) leaves the job's channel and frees the stream's slot; call it when the
    stream ends for any reason.
    """

    def __init__(self, hub: JobEventHub, job_id: str, after: int) -> None:
        self.hub, self.job_id, self.last = hub, job_id, after
        self.replay: list[LiveEvent] = []
        self.queue: asyncio.Queue[list[LiveEvent] | None] = asyncio.Queue(hub.queue_size)
        self.ended = False  # no more live events will be queued (dropped, or the hub closed)
        self.dropped = False
        self.closed = False
        self._channel: _Channel | None = None

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
class _ReplayRead:
    """Streams waiting for the same replay read, which has not started yet."""

    after: int
    result: asyncio.Future[list[LiveEvent] | None]


@dataclass(eq=False)
class _Channel:
    """The one subscription of this process to one job, shared by all its streams."""

    hub: JobEventHub
    job_id: str
    subscribers: set[Subscription] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    cursor: int = 0  # the id of the last event handed out
    failure: BaseException | None = None
    task: asyncio.Task[None] | None = None
    next_replay: _ReplayRead | None = None
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
            read = self.next_replay = _ReplayRead(after, asyncio.get_running_loop().create_future())
            read.result.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if unused
            task = asyncio.get_running_loop().create_task(self._read_replay(read))
            self.replay_tasks.add(task)
            task.add_done_callback(self.replay_tasks.discard)
        read.after = min(read.after, after)
        events = await asyncio.shield(read.result)
        if events is None or read.after == after:
            return events
        return [item for item in events if item.id > after]

    async def _read_replay(self, read: _ReplayRead) -> None:
        async with self.replay_lock:
            await asyncio.sleep(REPLAY_GATHER_S)
            self.next_replay = None  # who joins from now on needs a read that starts after joining
            try:
                read.result.set_result(
                    await self.hub.read(_replay, self.hub.db, self.job_id, read.after, self.hub.encode)
                )
            except asyncio.CancelledError:
                read.result.cancel()
                raise
            except Exception as exc:
                read.result.set_exception(exc)

    async def run(self) -> None:
        try:
            self.cursor = await self.hub.read(_last_event_id, self.hub.db, self.job_id)
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
                events = await self.hub.read(_events_after, self.hub.db, self.job_id, self.cursor, self.hub.encode)
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
        self.channels: dict[str, _Channel] = {}
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

    def _new_channel(self, job_id: str) -> _Channel:
        channel = _Channel(self, job_id)
        self.channels[job_id] = channel
        channel.task = asyncio.get_running_loop().create_task(channel.run(), name=f"vt-events-{job_id[:8]}")
        return channel

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking database read in a thread, at most ``READ_CONCURRENCY`` at once."""
        assert self._reads is not None, "JobEventHub.start() was not called"
        async with self._reads:
            return await asyncio.to_thread(fn, *args)

"""Job event notifications between Celery workers and API processes, over Redis pub/sub.

A worker publishes the ids of the jobs whose events it just committed; each API process holds one
subscription (not one per stream) and hands the ids to its event hub, which reads the new events from
the database. A message carries only job ids: the database stays the record, and a lost message
costs a little latency (the hub's safety poll), never an event.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

import redis

from ..services.commits import Commit

log = logging.getLogger(__name__)

CHANNEL = "vision_trainer:job_events"
RETRY_S = 1.0


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5, health_check_interval=30)


class RedisEventPublisher:
    """Worker side: a commit listener (``watch_commits``) whose job ids go out from a thread of its
    own, so a training step never waits for Redis. Ids that pile up meanwhile go out in one message."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pending: queue.SimpleQueue[frozenset[str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="vt-event-publisher", daemon=True)

    def __call__(self, commit: Commit) -> None:
        if commit.job_ids:
            self._pending.put(commit.job_ids)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._pending.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        client: redis.Redis | None = None
        failing = False
        while (batch := self._next_batch()) is not None:
            try:
                client = client or _client(self.url)
                client.publish(CHANNEL, " ".join(sorted(batch)))
                failing = False
            except Exception as exc:  # the API's safety poll still finds these events
                if not failing:
                    log.warning("could not publish job event notifications on %s: %s", self.url, exc)
                failing, client = True, None

    def _next_batch(self) -> set[str] | None:
        first = self._pending.get()
        if first is None:
            return None
        batch = set(first)
        while True:
            try:
                more = self._pending.get_nowait()
            except queue.Empty:
                return batch
            if more is None:
                self._pending.put(None)  # stop after this batch
                return batch
            batch |= more


class RedisEventSubscriber:
    """API side: the process's one subscription. Hands the job ids it hears to ``notify``; after every
    (re)connection calls ``resync``, since notifications sent while it was away are lost."""

    def __init__(self, url: str, notify: Callable[[Iterable[str]], None], resync: Callable[[], None]) -> None:
        self.url, self.notify, self.resync = url, notify, resync
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="vt-event-subscriber", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
                return
            except Exception as exc:
                if not self._failing:
                    log.warning(
                        "job event subscription on %s failed (%s); streams fall back to slow polling until it is back",
                        self.url,
                        exc,
                    )
                self._failing = True
            self._stop.wait(RETRY_S)

    def _listen(self) -> None:
        client = _client(self.url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            if self._failing:
                log.info("job event subscription on %s is back", self.url)
            self._failing = False
            self.resync()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                job_ids = set(message["data"].decode().split())
                while (more := pubsub.get_message(timeout=0)) is not None:  # take what else arrived
                    job_ids.update(more["data"].decode().split())
                self.notify(job_ids)
        finally:
            pubsub.close()
            client.close()

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

from .channel import COALESCE_S, REPLAY_GATHER_S, Subscription
from .hub import QUEUE_SIZE, READ_CONCURRENCY, SAFETY_POLL_S, JobEventHub
from .reads import Encoder, LiveEvent

__all__ = [
    "COALESCE_S",
    "QUEUE_SIZE",
    "READ_CONCURRENCY",
    "REPLAY_GATHER_S",
    "SAFETY_POLL_S",
    "Encoder",
    "JobEventHub",
    "LiveEvent",
    "Subscription",
]

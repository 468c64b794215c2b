"""Reads of a job's events from the database, each in a session of its own (run in a thread by the hub)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ...store import repository as repo
from ...store.db import Database
from ...store.tables import Job, JobEvent

PAGE = 500  # events per query of a replay


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


def read_last_event_id(db: Database, job_id: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id)) or 0


def read_events_after(db: Database, job_id: str, after: int, encode: Encoder) -> list[LiveEvent]:
    with db.session() as session:
        return _pages(session, job_id, after, encode)


def read_replay(db: Database, job_id: str, after: int, encode: Encoder) -> list[LiveEvent] | None:
    """The job's events after ``after``; None when there is no such job."""
    with db.session() as session:
        if session.scalar(select(Job.id).where(Job.id == job_id)) is None:
            return None
        return _pages(session, job_id, after, encode)


def _pages(session: Session, job_id: str, after: int, encode: Encoder) -> list[LiveEvent]:
    events: list[LiveEvent] = []
    while True:
        rows = repo.events_after(session, job_id=job_id, after_id=after, limit=PAGE)
        events += [_live(row, encode) for row in rows]
        if len(rows) < PAGE:
            return events
        after = rows[-1].id

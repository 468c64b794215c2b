"""Who committed what: a callback after each commit of this process, for live updates.

Job events are written in many places (``repo.add_event``); rather than each place announcing them,
the session reports after commit which jobs got events, and whether the transaction wrote at all
(caches of lists care). Listeners are per database (engine), so several apps in one process (tests)
stay apart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session

from ..store.db import Database
from ..store.tables import JobEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Commit:
    """What one committed transaction of this process did."""

    job_ids: frozenset[str]  # jobs whose events it wrote
    wrote: bool  # it inserted, updated or deleted anything


CommitListener = Callable[[Commit], None]

_EVENT_JOBS = "vt_event_job_ids"
_WROTE = "vt_wrote"
_listeners: dict[Engine, list[CommitListener]] = {}
_listeners_lock = threading.Lock()


def watch_commits(db: Database, listener: CommitListener) -> Callable[[], None]:
    """Call ``listener`` after each commit on ``db`` made in this process, in the committing thread.

    The listener must be quick and must not raise (it runs inside the writer's call to commit).

    Returns:
        A function that stops the calls.
    """
    with _listeners_lock:
        if not _listeners:
            _install_session_hooks()
        _listeners.setdefault(db.engine, []).append(listener)

    def unwatch() -> None:
        with _listeners_lock:
            found = _listeners.get(db.engine, [])
            if listener in found:
                found.remove(listener)
            if not found:
                _listeners.pop(db.engine, None)

    return unwatch


_hooks_installed = False


def _install_session_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    sa_event.listen(Session, "after_flush", _after_flush)
    sa_event.listen(Session, "do_orm_execute", _on_execute)
    sa_event.listen(Session, "after_commit", _after_commit)
    sa_event.listen(Session, "after_rollback", _after_rollback)
    _hooks_installed = True


def _watched(session: Session) -> bool:
    return session.bind in _listeners


def _after_flush(session: Session, _context: Any) -> None:
    if not _watched(session):
        return
    session.info[_WROTE] = True
    jobs = {obj.job_id for obj in session.new if isinstance(obj, JobEvent)}
    if jobs:
        session.info.setdefault(_EVENT_JOBS, set()).update(jobs)


def _on_execute(state: ORMExecuteState) -> None:
    # Bulk UPDATE/DELETE statements (status changes, renames, deletions) bypass the flush.
    if (state.is_update or state.is_delete or state.is_insert) and _watched(state.session):
        state.session.info[_WROTE] = True


def _after_commit(session: Session) -> None:
    jobs = session.info.pop(_EVENT_JOBS, None)
    wrote = session.info.pop(_WROTE, False)
    if not wrote:
        return
    commit = Commit(job_ids=frozenset(jobs or ()), wrote=True)
    for listener in list(_listeners.get(session.bind, ())):  # type: ignore[arg-type]
        try:
            listener(commit)
        except Exception:  # a listener's failure must never fail the writer
            log.warning("commit listener failed", exc_info=True)


def _after_rollback(session: Session) -> None:
    session.info.pop(_EVENT_JOBS, None)
    session.info.pop(_WROTE, None)

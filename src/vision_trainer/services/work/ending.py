"""How a job ends: succeeded under its claim, failed or cancelled, or put back in the queue."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from ...store import repository as repo
from ...store.tables import Job
from ..context import Services
from .claim import JobLost
from .outage import retry_on_outage

log = logging.getLogger(__name__)


def mark_succeeded(session: Session, job: Job, claim: str, duration: float, **values: Any) -> None:
    """The job's success, in the caller's transaction, only while ``claim`` still holds it.

    Raises:
        JobLost: the claim no longer holds the job.
    """
    if not repo.set_job_status(
        session,
        job_id=job.id,
        expected=["running"],
        status="succeeded",
        held_by=claim,
        finished_at=repo.now(),
        phase="done",
        done=Job.total,
        duration_s=duration,
        **values,
    ):
        raise JobLost(job.id)


def final_events(
    session: Session, job_id: str, status: str, line: str, *, model_id: str | None = None, error: str | None = None
) -> None:
    """The last log line and the ``status`` event every stream ends with."""
    repo.add_event(session, job_id=job_id, kind="log", data={"line": line})
    repo.add_event(session, job_id=job_id, kind="status", data={"status": status, "model_id": model_id, "error": error})


def finish(
    services: Services,
    job_id: str,
    claim: str | None,
    status: str,
    *,
    error: str | None = None,
    line: str | None = None,
) -> str | None:
    """End a job ``claim`` holds as ``failed`` or ``cancelled``; None when the claim was lost."""
    line = line or f"Failed: {error}"
    log.info("job %s: %s", job_id, line)

    def write() -> str | None:
        with services.db.session() as session:
            if not repo.set_job_status(
                session,
                job_id=job_id,
                expected=["running"],
                status=status,
                held_by=claim,
                finished_at=repo.now(),
                phase="done",
                error=error,
            ):
                return None
            final_events(session, job_id, status, line, error=error)
        return status

    return retry_on_outage(services, f"job {job_id}: ending it {status}", write)


def release(services: Services, job_id: str, claim: str | None, line: str, *, died: bool = False) -> bool:
    """Put a running job back to ``queued``. A graceful stop (``died=False``) does not use up an attempt."""

    def write() -> bool:
        with services.db.session() as session:
            released = repo.set_job_status(
                session,
                job_id=job_id,
                expected=["running"],
                status="queued",
                held_by=claim,
                phase="queued",
                done=0,
                total=0,
                epoch=None,
                worker_id=None,
                heartbeat_at=None,
                **({} if died else {"attempts": Job.attempts - 1}),
            )
            if released:
                repo.add_event(session, job_id=job_id, kind="log", data={"line": line})
        return released

    return retry_on_outage(services, f"job {job_id}: putting it back in the queue", write)

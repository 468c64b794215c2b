"""Jobs as the API shows them: list, inspect, events, cancel, delete."""

from __future__ import annotations

from typing import Any

from ..store import repository as repo
from ..store.files import remove_tree
from .context import Services
from .errors import Conflict, NotFound
from .queue import JobQueue
from .storage import forget_usage
from .views import job_view

FINAL_STATUSES = repo.FINAL_STATUSES


def get_job(services: Services, job_id: str) -> dict[str, Any]:
    """The job view. Raises NotFound."""
    with services.db.session() as session:
        job = repo.get_job(session, job_id=job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}; GET /jobs lists them")
        return job_view(job, repo.log_lines(session, job_ids=[job_id])[job_id])


def list_jobs(services: Services, *, limit: int, offset: int) -> dict[str, Any]:
    with services.db.session() as session:
        jobs, count = repo.list_jobs(session, limit=limit, offset=offset)
        logs = repo.log_lines(session, job_ids=[j.id for j in jobs])
        return {"items": [job_view(j, logs[j.id]) for j in jobs], "count": count}


def job_events(services: Services, job_id: str, after: int) -> list[tuple[int, str, dict[str, Any]]]:
    """``(event id, kind, data)`` of the job's events after ``after``, in order."""
    with services.db.session() as session:
        return [(e.id, e.kind, e.data) for e in repo.events_after(session, job_id=job_id, after_id=after)]


def cancel_job(services: Services, queue: JobQueue, job_id: str) -> dict[str, Any]:
    """Cancel a queued job at once, or flag a running one to stop at its next batch.

    Raises:
        NotFound: no such job.
        Conflict: the job already ended (``job_finished``).
    """
    with services.db.session() as session:
        job = repo.get_job(session, job_id=job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}; GET /jobs lists them")
        now = repo.now()
        if repo.set_job_status(
            session,
            job_id=job_id,
            expected=["queued"],
            status="cancelled",
            finished_at=now,
            phase="done",
            cancel_requested=True,
        ):
            repo.add_event(session, job_id=job_id, kind="log", data={"line": "Cancelled before it started"})
            repo.add_event(
                session, job_id=job_id, kind="status", data={"status": "cancelled", "model_id": None, "error": None}
            )
        elif job.status == "running":
            repo.request_cancel(session, job_id=job_id)
        else:
            raise Conflict(f"job {job_id} already ended ({job.status}); nothing to cancel", code="job_finished")
    queue.cancel(job_id)
    return get_job(services, job_id)


def job_status(services: Services, job_id: str) -> str | None:
    """The job's status, or None when there is no such job."""
    with services.db.session() as session:
        job = repo.get_job(session, job_id=job_id)
        return job.status if job else None


def delete_job(services: Services, job_id: str) -> None:
    """Remove an ended job, its events and its uploaded images; its model stays.

    Raises:
        NotFound: no such job.
        Conflict: the job is still queued or running (``job_active``).
    """
    with services.db.session() as session:
        job = repo.get_job(session, job_id=job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}; GET /jobs lists them")
        if job.status in repo.ACTIVE_STATUSES:
            raise Conflict(f"job {job_id} is {job.status}; cancel it first", code="job_active")
        repo.delete_job(session, job_id=job_id)
    remove_tree(services.files.job_dir(job_id))
    forget_usage(services)

"""Queries and updates, keyword-only. Callers own the session (and so the transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from .tables import Alias, Job, JobEvent, Model, utcnow

ACTIVE_STATUSES = ("queued", "running")
DEFAULT_ALIAS = "default"
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


# --- jobs --------------------------------------------------------------------------------------


def create_job(
    session: Session,
    *,
    job_id: str,
    params: dict[str, Any],
    class_names: list[str],
    inputs: list[dict[str, Any]],
    dataset_id: str | None = None,
    dataset_version: int | None = None,
    kind: str = "train",
) -> Job:
    job = Job(
        id=job_id,
        status="queued",
        params=params,
        class_names=class_names,
        inputs=inputs,
        phase="queued",
        dataset_id=dataset_id,
        dataset_version=dataset_version,
        kind=kind,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, *, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(session: Session, *, limit: int, offset: int) -> tuple[list[Job], int]:
    rows = session.scalars(select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    count = session.scalar(select(func.count()).select_from(Job)) or 0
    return list(rows), count


def count_jobs(session: Session, *, statuses: Sequence[str]) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(Job.status.in_(statuses))) or 0


def jobs_with_status(session: Session, *, statuses: Sequence[str]) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status.in_(statuses)).order_by(Job.created_at)))


_UNSET: Any = object()


def set_job_status(
    session: Session,
    *,
    job_id: str,
    expected: Sequence[str],
    status: str,
    held_by: str | None = _UNSET,
    **values: Any,
) -> bool:
    """Compare-and-set: move the job to ``status`` only if it is in one of ``expected`` (and, when
    ``held_by`` is given, only if that claim still holds it).

    Returns:
        Whether this call made the change (so two claimants never both win).
    """
    conditions = [Job.id == job_id, Job.status.in_(expected)]
    if held_by is not _UNSET:
        conditions.append(Job.worker_id.is_(None) if held_by is None else Job.worker_id == held_by)
    result = session.execute(update(Job).where(*conditions).values(status=status, **values))
    return bool(rowcount(result))


def claim_job(session: Session, *, job_id: str, worker_id: str) -> bool:
    """``queued -> running`` for ``worker_id``, counting the attempt; False when someone else has it."""
    stamp = utcnow()
    return set_job_status(
        session,
        job_id=job_id,
        expected=["queued"],
        status="running",
        started_at=stamp,
        heartbeat_at=stamp,
        worker_id=worker_id,
        phase="preparing",
        done=0,
        total=0,
        epoch=None,
        attempts=Job.attempts + 1,
    )


def heartbeat(session: Session, *, job_id: str, worker_id: str) -> bool:
    """Stamp the heartbeat of a job ``worker_id`` still holds; False when it has lost the job."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(heartbeat_at=utcnow())
    )
    return bool(rowcount(result))


def stale_jobs(session: Session, *, before: datetime) -> list[Job]:
    """Running jobs whose holder has not stamped a heartbeat since ``before``."""
    stale = or_(Job.heartbeat_at < before, and_(Job.heartbeat_at.is_(None), Job.started_at < before))
    return list(session.scalars(select(Job).where(Job.status == "running", stale).order_by(Job.created_at)))


def update_job(session: Session, *, job_id: str, **values: Any) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(**values))


def request_cancel(session: Session, *, job_id: str) -> None:
    update_job(session, job_id=job_id, cancel_requested=True)


def cancel_requested(session: Session, *, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


# --- events ------------------------------------------------------------------------------------


def add_event(session: Session, *, job_id: str, kind: str, data: dict[str, Any]) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, data=data))


def events_after(session: Session, *, job_id: str, after_id: int, limit: int = 500) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id).order_by(JobEvent.id).limit(limit)
        )
    )


def log_lines(session: Session, *, job_ids: Sequence[str]) -> dict[str, list[str]]:
    """The log of each job, in order."""
    lines: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    rows = session.scalars(
        select(JobEvent).where(JobEvent.job_id.in_(list(job_ids)), JobEvent.kind == "log").order_by(JobEvent.id)
    )
    for row in rows:
        lines[row.job_id].append(row.data["line"])
    return lines


# --- models ------------------------------------------------------------------------------------


def create_model(session: Session, **values: Any) -> Model:
    model = Model(**values)
    session.add(model)
    session.flush()
    return model


def get_model(session: Session, *, model_id: str) -> Model | None:
    return session.get(Model, model_id)


def get_model_for_job(session: Session, *, job_id: str) -> Model | None:
    return session.scalar(select(Model).where(Model.job_id == job_id))


def list_models(session: Session, *, limit: int, offset: int) -> tuple[list[Model], int]:
    rows = session.scalars(select(Model).order_by(Model.created_at.desc(), Model.id).limit(limit).offset(offset)).all()
    count = session.scalar(select(func.count()).select_from(Model)) or 0
    return list(rows), count


def newest_model(session: Session) -> Model | None:
    return session.scalar(select(Model).order_by(Model.created_at.desc(), Model.id).limit(1))


def delete_model(session: Session, *, model_id: str) -> None:
    session.execute(delete(Alias).where(Alias.model_id == model_id))
    session.execute(delete(Model).where(Model.id == model_id))


def delete_job(session: Session, *, job_id: str) -> None:
    session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))


def get_alias(session: Session, *, name: str) -> str | None:
    return session.scalar(select(Alias.model_id).where(Alias.name == name))


def set_alias(session: Session, *, name: str, model_id: str) -> None:
    alias = session.get(Alias, name)
    if alias is None:
        session.add(Alias(name=name, model_id=model_id))
    else:
        alias.model_id = model_id


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched (``Session.execute`` types its result as a plain ``Result``)."""
    return int(result.rowcount or 0)


def now() -> datetime:
    return utcnow()


# --- statistics ----------------------------------------------------------------------------------


def job_counts(session: Session) -> dict[str, int]:
    """Jobs per status."""
    return {status: count for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))}


def duration_histogram(session: Session, *, buckets: Sequence[float]) -> tuple[list[int], int, float]:
    """Cumulative counts of succeeded jobs' durations ``<=`` each bucket bound, their count and sum."""
    timed = Job.duration_s.is_not(None)
    columns = [func.sum(case((Job.duration_s <= bound, 1), else_=0)) for bound in buckets]
    row = session.execute(
        select(*columns, func.count(), func.coalesce(func.sum(Job.duration_s), 0.0)).where(timed)
    ).one()
    return [int(v or 0) for v in row[: len(buckets)]], int(row[-2]), float(row[-1])


def last_images_per_s(session: Session) -> float | None:
    return session.scalar(
        select(Job.images_per_s).where(Job.images_per_s.is_not(None)).order_by(Job.finished_at.desc()).limit(1)
    )


def count_models(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Model)) or 0

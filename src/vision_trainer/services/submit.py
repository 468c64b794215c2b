"""Creating a job: commit it queued on a dataset's snapshot, then hand its id to the queue.

Every kind of job is created here, so the queue's bound and the dataset's existence are checked once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from ..store import datasets as datasets_repo
from ..store import repository as repo
from .context import Services
from .errors import NotFound, TooManyRequests, Unavailable
from .queue import JobQueue
from .views import job_view

log = logging.getLogger(__name__)


def queue_job(
    services: Services,
    queue: JobQueue,
    *,
    kind: str,
    params: BaseModel,
    dataset_id: str | None = None,
    version: int | None = None,
    class_names: Sequence[str] = (),
    inputs: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Commit a queued job of ``kind`` (on a dataset's snapshot, when it works on one), then hand its id
    to the queue (the job is taken back if the queue cannot be reached: 503 ``queue_unavailable``).

    ``params`` is the kind's params model, validated; the row stores its ``model_dump()``.

    Returns:
        The job view.

    Raises:
        NotFound: the dataset was deleted meanwhile.
        Unavailable: the queue cannot be reached.
    """
    job_id = uuid.uuid4().hex
    with services.db.write_session() as session:
        # The dataset is locked while the job is written: a delete either went first (404) or waits.
        if dataset_id is not None and datasets_repo.lock_dataset(session, dataset_id=dataset_id) is None:
            raise NotFound(f"no dataset with id {dataset_id!r}; GET /datasets lists them")
        job = repo.create_job(
            session,
            job_id=job_id,
            params=params.model_dump(mode="json"),
            class_names=list(class_names),
            inputs=list(inputs),
            dataset_id=dataset_id,
            dataset_version=version,
            kind=kind,
        )
        view = job_view(job, [])
    try:
        queue.enqueue(job_id)
    except Exception as exc:
        # Nobody would ever run it: take the job back so the client can retry with nothing half-made.
        log.error("could not enqueue job %s: %s", job_id, exc)
        with services.db.session() as session:
            withdrawn = repo.set_job_status(session, job_id=job_id, expected=["queued"], status="queued")
            if withdrawn:
                repo.delete_job(session, job_id=job_id)
        if not withdrawn:  # the message went out after all and a worker has the job
            return view
        raise Unavailable(
            f"the job queue cannot be reached ({type(exc).__name__}); the job was not created, retry later",
            code="queue_unavailable",
        ) from None
    return view


def check_queue_room(services: Services) -> None:
    """Refuse a new job while ``VT_MAX_QUEUED_JOBS`` jobs wait (trainings and analyses alike)."""
    with services.db.session() as session:
        queued = repo.count_jobs(session, statuses=["queued"])
    if queued >= services.settings.max_queued_jobs:
        raise TooManyRequests(
            f"{queued} jobs are already waiting (VT_MAX_QUEUED_JOBS); retry when some have run",
            code="queue_full",
        )

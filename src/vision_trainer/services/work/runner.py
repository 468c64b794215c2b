"""Running a job: claim it, keep its heartbeat, hand it to its kind, and end it with a status, once."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ...ml.errors import MLError, TrainingCancelled
from ...store import repository as repo
from ...store.tables import Job
from ..context import Services
from ..kinds import KINDS
from .claim import Heartbeat, JobInterrupted, JobLost, worker_name
from .ending import finish, release
from .kind import JobContext
from .outage import retry_on_outage
from .reporter import JobReporter

log = logging.getLogger(__name__)


def run_job(
    services: Services,
    job_id: str,
    *,
    worker: str | None = None,
    interrupted: Callable[[], bool] = lambda: False,
) -> str | None:
    """Claim a queued job and run it to the end: the one entry point every runner calls, for every kind.

    Safe to call any number of times, from any number of processes, for the same job: only the call
    that moves it ``queued -> running`` runs it, and only while its claim holds (a heartbeat thread
    keeps it fresh). When ``interrupted()`` turns True (the runner is stopping) the job is put back
    in the queue.

    Returns:
        The job's final status, or None when this call did not claim the job or lost it.
    """
    claim = f"{worker or worker_name()}#{uuid.uuid4().hex[:8]}"

    def claim_it() -> Job | None:
        with services.db.session() as session:
            claimed = repo.claim_job(session, job_id=job_id, worker_id=claim)
            return repo.get_job(session, job_id=job_id) if claimed else None

    job = retry_on_outage(services, f"job {job_id}: claim", claim_it)
    if job is None:
        return None
    started = time.monotonic()
    with Heartbeat(services, job_id, claim) as heartbeat:
        reporter = JobReporter(services, job_id, interrupted, heartbeat.lost)
        try:
            kind = KINDS.resolve_kind(job.kind)
            try:
                params = kind.params.model_validate(job.params)
            except ValidationError as exc:
                return finish(services, job_id, claim, "failed", error=f"the job's stored params are invalid: {exc}")
            _opening(reporter, kind.opening_lines(params), claim, job)
            return kind.run(JobContext(services, job, params, reporter, claim, started))
        except JobInterrupted:
            release(services, job_id, claim, "Interrupted: the server is stopping; the job will run again")
            return None
        except JobLost:
            log.warning("job %s: claim %s lost (heartbeat went stale); another worker runs it", job_id, claim)
            return None
        except TrainingCancelled:
            return finish(services, job_id, claim, "cancelled", line="Cancelled")
        except MLError as exc:
            return finish(services, job_id, claim, "failed", error=str(exc))
        except Exception as exc:  # a job must end with a status whatever went wrong
            log.exception("job %s failed", job_id)
            return finish(services, job_id, claim, "failed", error=f"{type(exc).__name__}: {exc}")


def _opening(reporter: JobReporter, lines: list[str], claim: str, job: Job) -> None:
    first, *rest = lines or [""]
    reporter.log(f"{first} (worker {claim})".lstrip())
    for line in rest:
        reporter.log(line)
    if job.attempts > 1:
        reporter.log(f"Attempt {job.attempts}: the previous run was interrupted")


def final_message(job: dict[str, Any]) -> str:
    """How a finished job's outcome reads in an answer: its kind words a success."""
    noun = KINDS.resolve_kind(job.get("kind")).noun
    if job["status"] == "succeeded":
        return KINDS.resolve_kind(job.get("kind")).final_message(job)
    if job["status"] == "failed":
        return f"{noun} failed: {job['error']}"
    return f"{noun} was cancelled"


def queued_message(job: dict[str, Any]) -> str:
    """The answer's message when a job was queued."""
    return f"{KINDS.resolve_kind(job.get('kind')).noun} job queued; follow it at /jobs/{job['job_id']}"

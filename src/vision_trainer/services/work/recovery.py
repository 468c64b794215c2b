"""Recovery: jobs whose worker died go back to the queue (or end), found by their stale heartbeat."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from pathlib import Path

from ...store import repository as repo
from ...store.tables import Job
from ..context import Services
from ..kinds import KINDS
from .ending import finish, release

log = logging.getLogger(__name__)


def _recover(services: Services, job: Job, why: str) -> bool:
    """A running job whose worker died: re-queue it; end it as cancelled when a cancel was asked, or as
    failed once it has killed ``max_attempts`` workers. Returns whether it was re-queued."""
    limit = services.settings.max_attempts
    if job.cancel_requested:
        finish(services, job.id, job.worker_id, "cancelled", line=f"Cancelled: {why}")
    elif job.attempts < limit:
        return release(services, job.id, job.worker_id, f"Re-queued: {why}", died=True)
    else:
        finish(
            services,
            job.id,
            job.worker_id,
            "failed",
            error=f"{why}; it was attempt {job.attempts} of {limit} (VT_MAX_ATTEMPTS), so it is not run again",
        )
    return False


def sweep_stale_jobs(services: Services) -> list[str]:
    """Re-queue (or fail) running jobs whose heartbeat is older than ``VT_HEARTBEAT_TIMEOUT_S``.

    Any number of processes may sweep at once: every change is a compare-and-set on the claim.

    Returns:
        The ids put back to ``queued``; the caller hands them to its queue again.
    """
    timeout = services.settings.heartbeat_timeout_s
    with services.db.session() as session:
        stale = repo.stale_jobs(session, before=repo.now() - timedelta(seconds=timeout))
    requeued = []
    for job in stale:
        why = f"worker {job.worker_id} sent no heartbeat for {timeout:g} s"
        if _recover(services, job, why):
            log.warning("job %s re-queued: %s", job.id, why)
            requeued.append(job.id)
        else:
            log.warning("job %s not re-queued (cancel asked, attempts used up, or taken meanwhile): %s", job.id, why)
    return requeued


def waiting_jobs_without_images(services: Services) -> list[str]:
    """Queued or running jobs whose inputs (the folder their kind reads) are not in this process's data
    dir: a worker that sees any is not looking at the API's data dir."""
    with services.db.session() as session:
        waiting = repo.jobs_with_status(session, statuses=list(repo.ACTIVE_STATUSES))
        kinds = [(job, KINDS.find_kind(job.kind)) for job in waiting]
        folders = [kind.inputs_dir(services, job) for job, kind in kinds if kind is not None]
    root = services.files.root
    return [str(_relative(folder, root)) for folder in folders if folder is not None and not folder.is_dir()]


def _relative(folder: Path, root: Path) -> Path:
    try:
        return folder.relative_to(root)
    except ValueError:
        return folder


def claim_holder(claim: str | None) -> tuple[str, int] | None:
    """``(host, pid)`` of a claim ``host:pid#claim``, or None when it names none."""
    holder = (claim or "").split("#", 1)[0]
    host, _, pid = holder.rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:  # a killed process its parent has not reaped yet is no holder either
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _why_dead(job: Job, *, at_start: bool) -> str | None:
    """Why the holder of a running job with a fresh heartbeat is known dead anyway, or None while it may
    live: only a process on this host can be looked at."""
    holder = claim_holder(job.worker_id)
    if holder is None:
        return "it was held by no worker"
    host, pid = holder
    if host != socket.gethostname():
        return None
    if pid == os.getpid():  # at start, a claim with our pid is an earlier process's (pids are reused)
        return "the server stopped while this job ran" if at_start else None
    if not _process_alive(pid):
        return f"the server stopped while this job ran (process {pid} has ended)"
    return None


def recover_dead_jobs(services: Services, *, at_start: bool = False) -> list[str]:
    """The local runner's recovery: re-queue (or end) running jobs whose holder is dead, that is whose
    heartbeat is older than ``VT_HEARTBEAT_TIMEOUT_S`` or whose process on this host has ended. A job
    that another live process (a second server on the same data dir) trains is left alone.

    Returns:
        The ids put back to ``queued``.
    """
    requeued = sweep_stale_jobs(services)
    with services.db.session() as session:
        running = repo.jobs_with_status(session, statuses=["running"])
    for job in running:
        why = _why_dead(job, at_start=at_start)
        if why is None:
            continue
        if _recover(services, job, why):
            log.warning("job %s re-queued: %s", job.id, why)
            requeued.append(job.id)
    return requeued


def requeue_interrupted(services: Services) -> list[str]:
    """At the local runner's start: jobs whose holder died go back to ``queued`` (or fail after
    ``max_attempts``); jobs live processes are training are left to them. Returns every queued job id,
    oldest first."""
    recover_dead_jobs(services, at_start=True)
    with services.db.session() as session:
        return [job.id for job in repo.jobs_with_status(session, statuses=["queued"])]

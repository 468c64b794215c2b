"""The default runner: trains in background threads of the server process."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from ..services.context import Services
from ..services.work.recovery import recover_dead_jobs, requeue_interrupted
from ..services.work.runner import run_job
from .sweeper import Sweeper

log = logging.getLogger(__name__)


class LocalJobQueue:
    """Runs at most ``max_concurrent`` jobs at once in this process; the rest wait queued.

    The training thread releases the GIL inside torch, so the event loop keeps answering requests.
    """

    def __init__(self, services: Services, *, max_concurrent: int) -> None:
        self.services = services
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="vt-job")
        self._closed = threading.Event()
        # A second server on the same data dir may die while this one runs: its jobs are taken over here.
        self._sweeper = Sweeper(services, self.enqueue, recover_dead_jobs)

    def start(self) -> None:
        """Re-queue what a dead process left running, and run every queued job, oldest first (a job a
        live process trains, e.g. a second server on the same data dir, is left to it)."""
        for job_id in requeue_interrupted(self.services):
            log.info("resuming job %s left over from a previous run", job_id)
            self.enqueue(job_id)
        self._sweeper.start()

    def enqueue(self, job_id: str) -> None:
        self._executor.submit(self._run, job_id)

    def cancel(self, job_id: str) -> None:
        # The running job polls the cancel flag in the database; a queued one is already cancelled.
        return None

    def _run(self, job_id: str) -> None:
        if self._closed.is_set():
            return
        try:
            run_job(self.services, job_id, interrupted=self._closed.is_set)
        except Exception:  # never let one job kill the worker thread
            log.exception("job %s crashed the runner", job_id)

    def shutdown(self) -> None:
        """Stop taking jobs; a job still training goes back to the queue and resumes at the next start."""
        self._closed.set()
        self._sweeper.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

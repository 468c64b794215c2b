"""Progress, log lines and cancellation checks of one running job, written to the database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ...ml.hooks import TrainingHooks
from ...store import repository as repo
from ..context import Services
from ..errors import is_database_outage
from .claim import JobInterrupted, JobLost
from .outage import retry_on_outage

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
CANCEL_POLL_S = 0.5


class JobReporter:
    """Writes progress, log lines and cancellation checks of one running job to the database."""

    def __init__(self, services: Services, job_id: str, interrupted: Callable[[], bool], lost: threading.Event) -> None:
        self.services = services
        self.job_id = job_id
        self.interrupted = interrupted
        self.lost = lost
        self._last_phase = ""
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    def progress(self, phase: str, done: int, total: int, epoch: int | None) -> None:
        now = time.monotonic()
        finished_phase = total > 0 and done >= total
        if phase == self._last_phase and not finished_phase and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_phase, self._last_progress = phase, now
        values: dict[str, Any] = {"phase": phase, "done": done, "total": total}
        if epoch is not None:
            values["epoch"] = epoch

        def write() -> None:
            with self.services.db.session() as session:
                repo.update_job(session, job_id=self.job_id, **values)
                repo.add_event(session, job_id=self.job_id, kind="progress", data={**values, "epoch": epoch})

        retry_on_outage(self.services, f"job {self.job_id}: progress", write)

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)

        def write() -> None:
            with self.services.db.session() as session:
                repo.add_event(session, job_id=self.job_id, kind="log", data={"line": line})

        retry_on_outage(self.services, f"job {self.job_id}: log line", write)

    def should_stop(self) -> bool:
        if self.interrupted():
            raise JobInterrupted(self.job_id)
        if self.lost.is_set():
            raise JobLost(self.job_id)
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= CANCEL_POLL_S:
            self._last_cancel_check = now
            try:
                with self.services.db.session() as session:
                    self._cancelled = repo.cancel_requested(session, job_id=self.job_id)
            except Exception as exc:  # asked again at the next check; the next write waits for the database
                if not is_database_outage(exc):
                    raise
        return self._cancelled

    def hooks(self) -> TrainingHooks:
        return TrainingHooks(progress=self.progress, log=self.log, should_stop=self.should_stop)

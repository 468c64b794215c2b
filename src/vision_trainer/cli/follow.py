"""Following a job: it runs in a thread of this process while its log lines and one progress bar per
phase go to stderr; Ctrl-C cancels it."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ..services.errors import ServiceError
from .common import bar, note

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..services.context import Services

POLL_S = 0.2
# Phases whose progress counts something worth a bar, and what it counts.
PROGRESS_UNITS = {"extracting": "img", "training": "epoch", "tuning": "epoch"}


def run_job(services: Services, job_id: str) -> None:
    """Run the queued job to its end in this thread: the one place the command line names the job runner."""
    from ..services.work.runner import run_job

    run_job(services, job_id)


def run_and_follow(services: Services, job_id: str) -> dict[str, Any]:
    """Run the queued job in a thread while the log and a progress bar go to stderr; Ctrl-C cancels it.

    Returns:
        The job view once it ended.
    """
    worker = threading.Thread(target=run_job, args=(services, job_id), name=f"train-{job_id[:8]}")
    worker.start()
    follower = JobFollower(services, job_id)
    try:
        while True:
            try:
                return follower.follow(worker)
            except KeyboardInterrupt:
                follower.cancel()
    finally:
        follower.close()


class JobFollower:
    """Shows a running job on stderr: new log lines, and one bar per phase in that phase's unit."""

    def __init__(self, services: Services, job_id: str) -> None:
        self.services, self.job_id = services, job_id
        self.after = 0
        self.phase: str | None = None
        self.bar: tqdm | None = None

    def follow(self, worker: threading.Thread) -> dict[str, Any]:
        """Show the job's events until ``worker`` has ended; returns the job view."""
        from ..services.jobs import get_job

        while True:
            ended = not worker.is_alive()
            self._show_events()
            if ended:
                return get_job(self.services, self.job_id)
            time.sleep(POLL_S)

    def _show_events(self) -> None:
        from ..services.jobs import job_events

        # The job's events, not its row: every log line and every phase's last step, in order,
        # however short the phase was.
        for event_id, kind, data in job_events(self.services, self.job_id, self.after):
            self.after = event_id
            if kind == "log":
                note(data["line"])
            elif kind == "progress":
                self._show_progress(data)

    def _show_progress(self, progress: dict[str, Any]) -> None:
        phase, done, total = progress["phase"], progress["done"], progress["total"]
        if phase != self.phase:
            self.close()
            self.phase = phase
        if self.bar is None and phase in PROGRESS_UNITS and total > 0:
            self.bar = bar(total, PROGRESS_UNITS[phase], phase, initial=done)
        if self.bar is not None:
            self.bar.total = max(total, done)
            self.bar.update(done - self.bar.n)

    def cancel(self) -> None:
        from ..jobs.inline import CallerRunsQueue
        from ..services.jobs import cancel_job

        note("cancelling: the job stops at its next batch")
        try:
            cancel_job(self.services, CallerRunsQueue(), self.job_id)
        except ServiceError:  # it ended meanwhile
            pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

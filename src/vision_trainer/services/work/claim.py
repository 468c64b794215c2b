"""A worker's hold on a job: its name, the heartbeat that keeps the claim fresh, and how a claim ends early."""

from __future__ import annotations

import logging
import os
import socket
import threading

from ...store import repository as repo
from ..context import Services
from ..errors import is_database_outage

log = logging.getLogger(__name__)


class JobInterrupted(Exception):
    """The runner is shutting down: the job goes back to the queue instead of ending."""


class JobLost(Exception):
    """This claim no longer holds the job: its heartbeat went stale and the job was re-queued."""


def worker_name() -> str:
    """``host:pid`` of this process, as job rows show who runs them."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Stamps the job's heartbeat from a thread of its own, so a long batch never looks like a dead
    worker; notices when the claim was lost (the sweep re-queued the job)."""

    def __init__(self, services: Services, job_id: str, claim: str) -> None:
        self.services, self.job_id, self.claim = services, job_id, claim
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vt-heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.services.settings.heartbeat_interval_s):
            try:
                with self.services.db.session() as session:
                    held = repo.heartbeat(session, job_id=self.job_id, worker_id=self.claim)
            except Exception as exc:  # the database is away: beat again at the next interval
                if not failing:
                    log.warning(
                        "job %s: heartbeat failed (%s); retrying every %g s",
                        self.job_id,
                        type(exc).__name__,
                        self.services.settings.heartbeat_interval_s,
                        exc_info=not is_database_outage(exc),
                    )
                failing = True
                continue
            if failing:
                log.warning("job %s: heartbeat stamped again", self.job_id)
                failing = False
            if not held:
                self.lost.set()
                return

"""A thread that periodically recovers jobs whose worker died, for every runner (local and Celery)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..services.context import Services
from ..services.errors import is_database_outage

log = logging.getLogger(__name__)


class Sweeper:
    """Every ``VT_SWEEP_INTERVAL_S``: ``sweep`` puts jobs whose holder died back in the queue; their ids
    go to ``enqueue``.

    While the database is unreachable no worker can stamp its heartbeat, so the moment it is back every
    running job looks stale. The sweeper therefore waits ``VT_HEARTBEAT_TIMEOUT_S`` of reachable database
    after an outage before it judges heartbeats again: live workers beat within that time, dead ones
    stay silent and are recovered one timeout later.
    """

    def __init__(
        self, services: Services, enqueue: Callable[[str], None], sweep: Callable[[Services], list[str]]
    ) -> None:
        self.services, self.enqueue, self.sweep = services, enqueue, sweep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vt-sweep", daemon=True)
        self._database_down = False
        self._judge_after = 0.0  # monotonic time before which heartbeats are not judged

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.services.settings.sweep_interval_s):
            try:
                self.sweep_once()
            except Exception as exc:  # database or broker away for a moment: sweep again later
                if is_database_outage(exc):
                    if not self._database_down:
                        log.warning("sweep for stale jobs: the database cannot be reached (%s)", type(exc).__name__)
                    self._database_down = True
                else:
                    log.warning("sweep for stale jobs failed", exc_info=True)

    def sweep_once(self) -> list[str]:
        """One round; the ids it put back in the queue (none during the grace after an outage)."""
        if self._database_down:
            self.services.db.ping()  # raises while it is still away
            self._database_down = False
            self._judge_after = time.monotonic() + self.services.settings.heartbeat_timeout_s
            log.warning(
                "sweep for stale jobs: the database is back; heartbeats are judged again in %g s",
                self.services.settings.heartbeat_timeout_s,
            )
        if time.monotonic() < self._judge_after:
            return []
        requeued = self.sweep(self.services)
        for job_id in requeued:
            self.enqueue(job_id)
        return requeued

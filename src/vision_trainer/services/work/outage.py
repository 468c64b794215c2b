"""Database writes of a running job that survive a database restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ..context import Services
from ..errors import is_database_outage

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0

T = TypeVar("T")


def retry_on_outage(services: Services, what: str, write: Callable[[], T]) -> T:
    """Run ``write`` (a database transaction), retrying with backoff while the database cannot be
    reached, for up to ``VT_DATABASE_RETRY_S``: a job survives a database restart instead of failing.

    Raises:
        Whatever ``write`` raised, once the database has been unreachable for longer than that, or at
        once for errors that are not about reaching it.
    """
    deadline = time.monotonic() + services.settings.database_retry_s
    delay = RETRY_FIRST_S
    failed_since: float | None = None
    while True:
        try:
            result = write()
        except Exception as exc:
            if not is_database_outage(exc) or time.monotonic() + delay > deadline:
                raise
            if failed_since is None:
                failed_since = time.monotonic()
                log.warning(
                    "%s: the database cannot be reached (%s); retrying for up to %g s",
                    what,
                    type(exc).__name__,
                    services.settings.database_retry_s,
                )
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        if failed_since is not None:
            log.warning("%s: the database is back after %.1f s", what, time.monotonic() - failed_since)
        return result

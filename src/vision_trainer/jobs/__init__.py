"""Job runners behind the services' ``JobQueue`` protocol: the in-process local runner (default),
Celery workers (``VT_JOB_BACKEND=celery``), and a queue that leaves the job to its caller (CLI,
benchmarks)."""

from __future__ import annotations

from typing import Any

from ..services.context import Services


def make_job_queue(services: Services) -> Any:
    """The runner ``VT_JOB_BACKEND`` names, not started yet (``start()``, then ``shutdown()``)."""
    if services.settings.job_backend == "celery":
        from .celery_queue import CeleryJobQueue

        return CeleryJobQueue(services)
    from .local import LocalJobQueue

    return LocalJobQueue(services, max_concurrent=services.settings.max_concurrent_jobs)

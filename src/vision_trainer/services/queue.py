"""What the services need from a job queue. Implementations live in ``vision_trainer.jobs``."""

from __future__ import annotations

from typing import Protocol


class JobQueue(Protocol):
    def enqueue(self, job_id: str) -> None:
        """Hand a committed, queued job to whatever runs jobs."""

    def cancel(self, job_id: str) -> None:
        """Best-effort: tell the runner that ``job_id`` was cancelled (the flag is already in the DB)."""

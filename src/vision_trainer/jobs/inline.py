"""A queue that runs nothing: the caller runs the job itself (the CLI, benchmarks)."""

from __future__ import annotations


class CallerRunsQueue:
    """Satisfies the services' ``JobQueue``; the submitter then calls ``services.work.runner.run_job`` itself."""

    def enqueue(self, job_id: str) -> None:
        return None

    def cancel(self, job_id: str) -> None:
        return None

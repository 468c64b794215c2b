"""What a kind of job is to the machinery, and the registry the machinery looks kinds up in.

A kind declares its name, the model its params are stored and read back with, the folder of its
inputs (what it works on), how it runs and how its outcome reads; the machinery never names one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from ...ml.hooks import TrainingHooks
from ...store import repository as repo
from ...store.tables import Job
from ..context import Services
from ..errors import InvalidRequest
from .ending import final_events, mark_succeeded
from .outage import retry_on_outage
from .reporter import JobReporter

P = TypeVar("P", bound=BaseModel)


@dataclass
class JobContext(Generic[P]):
    """A claimed, running job as its kind sees it: the row, its typed params, where to report."""

    services: Services
    job: Job
    params: P
    reporter: JobReporter
    claim: str
    started: float

    def elapsed(self) -> float:
        """Seconds since the job was claimed."""
        return time.monotonic() - self.started

    def hooks(self) -> TrainingHooks:
        return self.reporter.hooks()

    def log(self, line: str) -> None:
        self.reporter.log(line)

    def succeed(
        self,
        *,
        line: str,
        metrics: dict[str, Any],
        model_id: str | None = None,
        also: Callable[[Session], None] | None = None,
        **values: Any,
    ) -> str:
        """Mark the job succeeded under its claim, with ``also`` (e.g. a model row) in the same
        transaction, retrying through database outages. The one place a job succeeds.

        Raises:
            JobLost: the claim no longer holds the job.
        """
        duration = self.elapsed()

        def write() -> None:
            with self.services.db.session() as session:
                current = repo.get_job(session, job_id=self.job.id)
                if current is not None and current.status == "succeeded" and current.model_id == model_id:
                    return  # a previous try committed, but the database went away before it said so
                mark_succeeded(session, self.job, self.claim, duration, metrics=metrics, model_id=model_id, **values)
                if also is not None:
                    also(session)
                final_events(session, self.job.id, "succeeded", line, model_id=model_id)

        retry_on_outage(self.services, f"job {self.job.id}: saving its result", write)
        return "succeeded"


class JobKind(Protocol[P]):
    """A kind of job. ``params`` validates what a job row stores (``model_dump()`` at submit time)."""

    name: str
    params: type[P]
    noun: str  # "Training", "Analysis": how messages about the job begin

    def inputs_dir(self, services: Services, job: Job) -> Path | None:
        """The folder the job reads its inputs from (None: it reads none): a worker that cannot see
        it is not looking at the API's data dir."""

    def opening_lines(self, params: P) -> list[str]:
        """Log lines the job starts with (the worker's name is added to the first)."""

    def run(self, context: JobContext[P]) -> str:
        """Do the work and end the job (``context.succeed``); returns the final status."""

    def final_message(self, job: dict[str, Any]) -> str:
        """How a succeeded job's outcome reads in an answer (the job view given)."""


class KindRegistry:
    """Kinds by name: ``register_kind``, ``list_kinds``, ``resolve_kind``."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind[Any]] = {}

    def register_kind(self, kind: JobKind[Any]) -> JobKind[Any]:
        if kind.name in self._kinds:
            raise ValueError(f"a job kind named {kind.name!r} is registered already")
        self._kinds[kind.name] = kind
        return kind

    def unregister_kind(self, name: str) -> None:
        self._kinds.pop(name, None)

    def list_kinds(self) -> list[str]:
        return sorted(self._kinds)

    def find_kind(self, name: str | None) -> JobKind[Any] | None:
        """The kind called ``name``, or None (rows written before kinds had names are training jobs)."""
        return self._kinds.get(name or "train")

    def resolve_kind(self, name: str | None) -> JobKind[Any]:
        """The kind called ``name`` (rows written before kinds had names are training jobs).

        Raises:
            InvalidRequest: no such kind (``unknown_job_kind``), naming the known ones.
        """
        kind = self.find_kind(name)
        if kind is None:
            raise InvalidRequest(
                f"unknown job kind {name!r}; known: {', '.join(self.list_kinds())}", code="unknown_job_kind"
            )
        return kind

    def __iter__(self) -> Iterator[JobKind[Any]]:
        return iter(self._kinds.values())

"""A job kind that exists only for tests: it counts, reporting progress, until told to stop.

It runs through the real machinery (claim, heartbeat, progress, cancel, recovery) with no dataset and
no model, which is what a new kind of job gets for one module and one registry line. A worker process
that should run it registers it before it starts (``WORKER_WITH_COUNT_KIND``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from vision_trainer.ml.errors import TrainingCancelled
from vision_trainer.services.context import Services
from vision_trainer.services.kinds import KINDS
from vision_trainer.services.work.kind import JobContext
from vision_trainer.store.tables import Job


class CountParams(BaseModel):
    steps: int = Field(3, ge=1, le=10_000)
    step_s: float = Field(0.02, ge=0, le=5)


class CountKind:
    name = "count"
    params = CountParams
    noun = "Counting"

    def inputs_dir(self, services: Services, job: Job) -> Path | None:
        return None

    def opening_lines(self, params: CountParams) -> list[str]:
        return [f"Counting to {params.steps}"]

    def run(self, context: JobContext[CountParams]) -> str:
        steps = context.params.steps
        for step in range(1, steps + 1):
            if context.reporter.should_stop():
                raise TrainingCancelled(f"cancelled at {step}")
            time.sleep(context.params.step_s)
            context.reporter.progress("counting", step, steps, None)
        return context.succeed(line=f"Counted to {steps}", metrics={"counted": steps})

    def final_message(self, job: dict[str, Any]) -> str:
        return f"Counted to {job['metrics']['counted']}"


KIND = CountKind()


@contextmanager
def count_kind_registered() -> Iterator[CountKind]:
    KINDS.register_kind(KIND)
    try:
        yield KIND
    finally:
        KINDS.unregister_kind(KIND.name)


# A `vision-trainer worker` that knows the count kind, for the Celery tests.
WORKER_WITH_COUNT_KIND = (
    "import sys; from tests.count_kind import KIND; from vision_trainer.services.kinds import KINDS; "
    "KINDS.register_kind(KIND); from vision_trainer.cli import main; sys.exit(main(sys.argv[1:]))"
)

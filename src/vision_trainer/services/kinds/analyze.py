"""The ``analyze`` kind: the insights of a dataset's snapshot, stored on the dataset; no model comes of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...store.tables import Job
from ..context import Services
from ..insights import AnalyzeParams, run_analysis
from ..work.kind import JobContext
from .train import compute_options


class AnalyzeKind:
    name = "analyze"
    params = AnalyzeParams
    noun = "Analysis"

    def inputs_dir(self, services: Services, job: Job) -> Path | None:
        return services.files.dataset_dir(job.dataset_id) if job.dataset_id else None

    def opening_lines(self, params: AnalyzeParams) -> list[str]:
        return [params.backbone_note]

    def run(self, context: JobContext[AnalyzeParams]) -> str:
        job = context.job
        summary = run_analysis(
            context.services, job, context.params, compute_options(context.services), context.hooks()
        )
        return context.succeed(line=f"Insights saved: GET /datasets/{job.dataset_id}/insights", metrics=summary)

    def final_message(self, job: dict[str, Any]) -> str:
        found = job["metrics"]
        return (
            f"Analysis finished: {found['suspects']} suspect label(s), {found['near_duplicates']} near-duplicate "
            f"group(s), {found['outliers']} outlier(s); GET /datasets/{job['dataset_id']}/insights"
        )


KIND = AnalyzeKind()

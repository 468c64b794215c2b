"""The ``export`` kind: one model converted into one bundled format, verified and cached; no model comes of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...ml.errors import TrainingCancelled
from ...store.tables import Job
from ..context import Services
from ..exports import ExportParams, build_export
from ..work.kind import JobContext


class ExportKind:
    name = "export"
    params = ExportParams
    noun = "Export"

    def inputs_dir(self, services: Services, job: Job) -> Path | None:
        return None  # it reads a model, which may be deleted meanwhile: the job then fails, the worker starts

    def opening_lines(self, params: ExportParams) -> list[str]:
        return [f"Exporting model {params.model_id} as {params.format}"]

    def run(self, context: JobContext[ExportParams]) -> str:
        params = context.params

        def progress(phase: str, done: int, total: int) -> None:
            if context.reporter.should_stop():
                raise TrainingCancelled(f"the {params.format} export was cancelled")
            context.reporter.progress(phase, done, total, None)

        metadata = build_export(context.services, params, progress)
        check = metadata["verification"]
        context.log(_verified_line(params.format, check))
        metrics = {"model_id": params.model_id, "format": params.format, "verification": check}
        url = f"/models/{params.model_id}/export?format={params.format}"
        return context.succeed(line=f"Export ready: GET {url}", metrics=metrics)

    def final_message(self, job: dict[str, Any]) -> str:
        found = job["metrics"]
        return f"Export finished: GET /models/{found['model_id']}/export?format={found['format']}"


def _verified_line(fmt: str, check: dict[str, Any]) -> str:
    if not check["ran"]:
        return f"Checked the {fmt} program's inputs, outputs and metadata (its runtime does not exist here)"
    line = (
        f"Verified in its runtime on {check['photos']} photos: top-1 agreement {check['top1_agreement']:.3f}, "
        f"max probability difference {check['max_probability_difference']:.1e}"
    )
    if "accuracy" in check:
        line += f", accuracy {check['accuracy']:.3f} (server {check['server_accuracy']:.3f})"
    return line


KIND = ExportKind()

"""POST /train: labelled uploads for N >= 2 classes -> a queued training job."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from ...services import jobs as job_service
from ...services import training
from ...services.context import Services
from ...services.errors import InvalidRequest
from ...services.uploads import Upload
from ...services.work.runner import final_message, queued_message
from ..deps import QueueDep, ServicesDep, SettingsDep
from ..forms import FILES_PROP, check_train_fields, multipart_form
from ..schemas import ERROR_RESPONSES, JobAccepted, JobFinished, TrainOptions
from .storage import check_upload_room

router = APIRouter(tags=["training"])

_CLASS_FIELD = re.compile(r"^(label|files)([0-9]+)$")
WAIT_POLL_S = 0.25

_class_props: dict[str, Any] = {}
for _n in (1, 2):
    _class_props[f"label{_n}"] = {"type": "string", "description": f"Name of class {_n}."}
    _class_props[f"files{_n}"] = {**FILES_PROP, "description": f"Images of class {_n} (at least 2)."}
ARCHIVE_PROP = {
    "type": "string",
    "format": "binary",
    "description": "A zip, tar or tar.gz of class folders (cats/1.jpg, dogs/2.jpg), instead of "
    "labelN/filesN; hidden files, files outside a class folder and non-images are skipped and listed.",
}
TRAIN_FORM_SCHEMA = multipart_form(
    {**_class_props, "archive": ARCHIVE_PROP, **TrainOptions.model_json_schema()["properties"]},
    description="More classes: label3/files3 … labelN/filesN, numbered without gaps. "
    "Instead of the class fields: `archive`, a zip, tar or tar.gz with one folder per class.",
)


def _has_class_fields(form: FormData) -> bool:
    return any(_CLASS_FIELD.match(key) for key in form.keys())


def parse_classes(form: FormData) -> tuple[list[str], list[list[Upload]]]:
    """``label1..labelN`` and ``files1..filesN`` from the form, checked to be numbered 1..N without gaps."""
    numbers: set[int] = set()
    for key in form.keys():
        match = _CLASS_FIELD.match(key)
        if match:
            numbers.add(int(match.group(2)))
    expected = set(range(1, len(numbers) + 1))
    if numbers != expected:
        raise InvalidRequest(
            f"class fields must be numbered 1..N without gaps; got numbers {sorted(numbers)}",
            code="invalid_class_fields",
        )
    labels: list[str] = []
    files: list[list[Upload]] = []
    for n in sorted(numbers):
        label = form.getlist(f"label{n}")
        if len(label) != 1 or not isinstance(label[0], str):
            raise InvalidRequest(f"label{n} must be given once, as text", code="missing_label")
        uploads = form.getlist(f"files{n}")
        if any(not isinstance(u, UploadFile) for u in uploads):
            raise InvalidRequest(f"files{n} must be file uploads", code="invalid_class_fields")
        labels.append(label[0])
        files.append([Upload(filename=u.filename or "", stream=u.file) for u in uploads])  # type: ignore[union-attr]
    return labels, files


def parse_archive(form: FormData) -> Upload | None:
    """The optional ``archive`` upload (zip, tar, tar.gz of class folders)."""
    values = form.getlist("archive")
    if not values:
        return None
    if len(values) != 1 or not isinstance(values[0], UploadFile):
        raise InvalidRequest(
            "archive must be one file upload (zip, tar or tar.gz of class folders)", code="invalid_class_fields"
        )
    return Upload(filename=values[0].filename or "", stream=values[0].file)


def parse_options(form: FormData) -> TrainOptions:
    raw = {key: form.get(key) for key in TrainOptions.model_fields if form.get(key) not in (None, "")}
    try:
        return TrainOptions.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@router.post(
    "/train",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": JobFinished, "description": "With wait=true: the ended job."}, **ERROR_RESPONSES},
    openapi_extra=TRAIN_FORM_SCHEMA,
    summary="Upload labelled photos and start training",
)
async def train(request: Request, services: ServicesDep, queue: QueueDep, settings: SettingsDep) -> Any:
    """Stores the images of every class, queues a training job and answers 202 at once.

    Fields: `label1..labelN` with `files1..filesN` (N ≥ 2) or an `archive` of class folders, `epochs`,
    `backbone`, `test_split`, `seed`, `name`, `augment_views`, `early_stopping`, `wait`, `skip_invalid`.
    The photos become a new dataset (`dataset_id` in the job) that later requests can improve and retrain. With `wait=true` the answer comes when the job has
    ended (any final status): 200 with the job object plus `message`. Unusable files are listed in a 422
    `errors` list, unless `skip_invalid=true`; 429 `queue_full` when VT_MAX_QUEUED_JOBS jobs wait.
    """
    declared = await check_upload_room(request, services)
    limits = {
        "max_files": settings.max_files,
        "max_fields": settings.max_fields,
        "max_part_size": settings.max_field_kb * 1024,
    }
    async with request.form(**limits) as form:
        check_train_fields(form)
        options = parse_options(form)
        archive = parse_archive(form)
        labels, files = parse_classes(form) if archive is None or _has_class_fields(form) else ([], [])
        job = await run_in_threadpool(
            training.submit_training,
            services,
            queue,
            training.TrainingRequest(
                labels=labels,
                files=files,
                options=training.TrainRequest(**options.model_dump(exclude={"wait", "skip_invalid"})),
                archive=archive,
                skip_invalid=options.skip_invalid,
                declared_bytes=declared,
            ),
        )
    return await job_answer(services, job, wait=options.wait)


async def job_answer(services: Services, job: dict[str, Any], *, wait: bool) -> JSONResponse:
    """202 with where to follow a queued job; with ``wait``, 200 with the job once it ended."""
    job_id = job["job_id"]
    if not wait:
        return JSONResponse(
            {
                "message": queued_message(job),
                "job_id": job_id,
                "status": job["status"],
                "status_url": f"/jobs/{job_id}",
                "dataset_id": job["dataset_id"],
                "log": job["log"],
            },
            status_code=202,
        )
    while job["status"] not in job_service.FINAL_STATUSES:
        await asyncio.sleep(WAIT_POLL_S)
        job = await run_in_threadpool(job_service.get_job, services, job_id)
    return JSONResponse({**job, "message": final_message(job)}, status_code=200)

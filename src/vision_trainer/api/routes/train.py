"""POST /train: labelled uploads for N >= 2 classes -> a queued training job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData

from ...services import training
from ..answers import job_answer
from ..deps import QueueDep, ServicesDep, SettingsDep
from ..form_fields import FILES_PROP, multipart_form
from ..multipart import WholeFormRoute
from ..schemas import ERROR_RESPONSES, JobAccepted, JobFinished, TrainForm
from ..uploads import (
    ARCHIVE_PROP,
    check_train_fields,
    check_upload_room,
    has_class_fields,
    parse_archive,
    parse_classes,
)

router = APIRouter(tags=["training"], route_class=WholeFormRoute)

_class_props: dict[str, Any] = {}
for _n in (1, 2):
    _class_props[f"label{_n}"] = {"type": "string", "description": f"Name of class {_n}."}
    _class_props[f"files{_n}"] = {**FILES_PROP, "description": f"Images of class {_n} (at least 2)."}
TRAIN_FORM_SCHEMA = multipart_form(
    {**_class_props, "archive": ARCHIVE_PROP, **TrainForm.model_json_schema()["properties"]},
    description="More classes: label3/files3 … labelN/filesN, numbered without gaps. "
    "Instead of the class fields: `archive`, a zip, tar or tar.gz with one folder per class.",
)


def parse_options(form: FormData) -> TrainForm:
    raw = {key: form.get(key) for key in TrainForm.model_fields if form.get(key) not in (None, "")}
    try:
        return TrainForm.model_validate(raw)
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
        labels, files = parse_classes(form) if archive is None or has_class_fields(form) else ([], [])
        job = await run_in_threadpool(
            training.submit_training,
            services,
            queue,
            training.TrainingUpload(
                labels=labels,
                files=files,
                options=training.TrainRequest(**options.model_dump(exclude={"wait", "skip_invalid"})),
                archive=archive,
                skip_invalid=options.skip_invalid,
                declared_bytes=declared,
            ),
        )
    return await job_answer(services, job, wait=options.wait)

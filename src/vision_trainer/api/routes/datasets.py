"""Datasets: photos people improve over time (add, relabel, remove), and training on them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.datastructures import FormData

from ...services import datasets, insights, training
from ...services.datasets import AddImages
from ...services.errors import InvalidRequest
from ..answers import job_answer
from ..dataset_schemas import (
    DatasetCreate,
    DatasetList,
    DatasetPublic,
    DatasetRename,
    ImageList,
    ImagesAdded,
    ImagesChanged,
    ImagesDelete,
    ImagesRelabel,
    InsightsPublic,
)
from ..deps import LimitQuery, OffsetQuery, QueueDep, ServicesDep, SettingsDep
from ..form_fields import FILES_PROP, check_field_names, multipart_form
from ..multipart import WholeFormRoute
from ..schemas import ERROR_RESPONSES, JobAccepted, JobFinished, TrainForm
from ..uploads import ARCHIVE_PROP, check_upload_room, image_groups, parse_archive

router = APIRouter(prefix="/datasets", tags=["datasets"], route_class=WholeFormRoute)

ADD_FIELDS = ("label", "files", "archive", "skip_invalid")
TRAIN_FIELDS = tuple(f for f in TrainForm.model_fields if f != "skip_invalid")

ADD_FORM_SCHEMA = multipart_form(
    {
        "label": {"type": "string", "description": "Class of `files`; leave out for unlabelled photos."},
        "files": {**FILES_PROP, "description": "Photos of one class (or unlabelled)."},
        "label1": {"type": "string", "description": "Several classes at once: label1..N ..."},
        "files1": {**FILES_PROP, "description": "... with files1..N."},
        "archive": ARCHIVE_PROP,
        "skip_invalid": {
            "type": "boolean",
            "description": "Keep the usable files and list the refused ones instead of refusing the whole request.",
        },
    }
)
TRAIN_FORM_SCHEMA = multipart_form(
    {k: v for k, v in TrainForm.model_json_schema()["properties"].items() if k in TRAIN_FIELDS}, required=False
)


@router.post("", status_code=201, response_model=DatasetPublic, summary="Create an empty dataset")
async def create_dataset(body: DatasetCreate, services: ServicesDep) -> Any:
    return JSONResponse(await run_in_threadpool(datasets.create_dataset, services, body.name), status_code=201)


@router.get("", response_model=DatasetList, summary="List datasets, newest first")
async def list_datasets(services: ServicesDep, limit: LimitQuery = 50, offset: OffsetQuery = 0) -> Any:
    return await run_in_threadpool(datasets.list_datasets, services, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=ERROR_RESPONSES, summary="One dataset")
async def get_dataset(dataset_id: str, services: ServicesDep) -> Any:
    """Its classes with counts, unlabelled photos, version, and the models trained on it (newest first)."""
    return await run_in_threadpool(datasets.get_dataset, services, dataset_id)


@router.patch("/{dataset_id}", response_model=DatasetPublic, responses=ERROR_RESPONSES, summary="Rename a dataset")
async def rename_dataset(dataset_id: str, body: DatasetRename, services: ServicesDep) -> Any:
    return await run_in_threadpool(datasets.rename_dataset, services, dataset_id, body.name)


@router.delete("/{dataset_id}", status_code=204, responses=ERROR_RESPONSES, summary="Delete a dataset and its photos")
async def delete_dataset(dataset_id: str, services: ServicesDep) -> Response:
    """Its photos go; models trained on it stay. 409 `dataset_busy` while a job trains on it."""
    await run_in_threadpool(datasets.delete_dataset, services, dataset_id)
    return Response(status_code=204)


@router.post(
    "/{dataset_id}/images",
    response_model=ImagesAdded,
    responses=ERROR_RESPONSES,
    openapi_extra=ADD_FORM_SCHEMA,
    summary="Add photos: one class, several classes, unlabelled, or an archive",
)
async def add_images(dataset_id: str, request: Request, services: ServicesDep, settings: SettingsDep) -> Any:
    """`label` + `files` (one class; no `label` = unlabelled photos), or `label1..N` + `files1..N`, and/or
    `archive` (zip, tar, tar.gz with one folder per class). All or nothing unless `skip_invalid=true`;
    exact duplicates of photos already in the dataset are listed in `duplicates`, not stored again.
    The dataset's `version` goes up by one when anything was added. 507 `storage_full` over VT_MAX_DATA_MB."""
    declared = await check_upload_room(request, services)
    limits = {
        "max_files": settings.max_files,
        "max_fields": settings.max_fields,
        "max_part_size": settings.max_field_kb * 1024,
    }
    async with request.form(**limits) as form:
        check_field_names(form.keys(), allowed=ADD_FIELDS, numbered=("label", "files"))
        skip = str(form.get("skip_invalid") or "false").strip().lower()
        if skip not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise InvalidRequest(f"skip_invalid must be true or false, got {skip!r}", code="invalid_parameter")
        add = AddImages(
            groups=image_groups(form),
            archive=parse_archive(form),
            skip_invalid=skip in ("true", "1", "yes", "on"),
            declared_bytes=declared,
        )
        return await run_in_threadpool(datasets.add_images, services, dataset_id, add)


@router.get(
    "/{dataset_id}/images",
    response_model=ImageList,
    responses=ERROR_RESPONSES,
    summary="List a dataset's photos (oldest first)",
)
async def list_images(
    dataset_id: str,
    services: ServicesDep,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
    label: str | None = Query(None, max_length=64, description="Only this class."),
    unlabelled: bool = Query(False, description="Only photos without a label."),
) -> Any:
    return await run_in_threadpool(
        datasets.list_images, services, dataset_id, label=label, unlabelled=unlabelled, limit=limit, offset=offset
    )


@router.get(
    "/{dataset_id}/images/{image_id}",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}, **ERROR_RESPONSES},
    summary="One stored photo",
)
async def image_file(dataset_id: str, image_id: str, services: ServicesDep) -> FileResponse:
    path = await run_in_threadpool(datasets.image_file, services, dataset_id, image_id)
    return FileResponse(path, media_type="application/octet-stream")


@router.patch(
    "/{dataset_id}/images",
    response_model=ImagesChanged,
    responses=ERROR_RESPONSES,
    summary="Relabel photos (label null = unlabelled)",
)
async def relabel_images(dataset_id: str, body: ImagesRelabel, services: ServicesDep) -> Any:
    """A new label becomes a new class; a class left without photos leaves the class list."""
    return await run_in_threadpool(datasets.relabel_images, services, dataset_id, body.image_ids, body.label)


@router.delete(
    "/{dataset_id}/images",
    response_model=ImagesChanged,
    responses=ERROR_RESPONSES,
    summary="Remove photos from a dataset",
)
async def delete_images(dataset_id: str, body: ImagesDelete, services: ServicesDep) -> Any:
    return await run_in_threadpool(datasets.delete_images, services, dataset_id, body.image_ids)


def _train_options(form: FormData) -> TrainForm:
    raw = {key: form.get(key) for key in TRAIN_FIELDS if form.get(key) not in (None, "")}
    try:
        return TrainForm.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@router.post(
    "/{dataset_id}/train",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": JobFinished, "description": "With wait=true: the ended job."}, **ERROR_RESPONSES},
    openapi_extra=TRAIN_FORM_SCHEMA,
    summary="Train on the dataset's labelled photos as they are now",
)
async def train_dataset(dataset_id: str, request: Request, services: ServicesDep, queue: QueueDep) -> Any:
    """The options of `POST /train` (`epochs`, `backbone`, `test_split`, `seed`, `name`, `augment_views`,
    `early_stopping`, `wait`) as form fields. The job takes the current version's labelled photos; features
    cached by earlier jobs are reused, so a retrain computes only the new photos'."""
    async with request.form() as form:
        check_field_names(form.keys(), allowed=TRAIN_FIELDS)
        options = _train_options(form)
    job = await run_in_threadpool(
        training.submit_dataset_training,
        services,
        queue,
        dataset_id,
        training.TrainRequest(**options.model_dump(exclude={"wait", "skip_invalid"})),
    )
    return await job_answer(services, job, wait=options.wait)


@router.post(
    "/{dataset_id}/analyze",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": JobFinished, "description": "With wait=true: the ended job."}, **ERROR_RESPONSES},
    summary="Look for wrong labels, near-duplicates, outliers and imbalance; suggest labels",
)
async def analyze_dataset(dataset_id: str, request: Request, services: ServicesDep, queue: QueueDep) -> Any:
    """A job like training (form field `wait`); its result is `GET /datasets/{id}/insights`. Features are
    the cached plain views (efficientnet_lite0), so a dataset that has trained analyzes in about a second."""
    async with request.form() as form:
        check_field_names(form.keys(), allowed=("wait",))
        wait = str(form.get("wait") or "false").strip().lower()
        if wait not in ("true", "false", "1", "0"):
            raise InvalidRequest(f"wait must be true or false, got {wait!r}", code="invalid_parameter")
    job = await run_in_threadpool(insights.submit_analysis, services, queue, dataset_id)
    return await job_answer(services, job, wait=wait in ("true", "1"))


@router.get(
    "/{dataset_id}/insights",
    response_model=InsightsPublic,
    responses=ERROR_RESPONSES,
    summary="The latest insights of a dataset",
)
async def dataset_insights(dataset_id: str, services: ServicesDep) -> Any:
    """`suspect_labels` (most suspect first), `near_duplicates` (`kind`: `cross_class`, `cross_split`,
    `same_class`), `outliers`, `class_balance`, `suggestions` for unlabelled photos (least certain first),
    `warnings`; `stale` when the dataset changed since. 404 `no_insights` before the first analysis."""
    return await run_in_threadpool(insights.get_insights, services, dataset_id)

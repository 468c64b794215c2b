"""POST /models/compare: several models judged on the same labelled photos."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ...services import compare
from ...services.datasets import AddImages
from ...services.errors import InvalidRequest
from ..deps import ServicesDep, SettingsDep
from ..form_fields import FILES_PROP, check_field_names, multipart_form
from ..multipart import WholeFormRoute
from ..schemas import ERROR_RESPONSES
from ..uploads import ARCHIVE_PROP, image_groups, parse_archive

router = APIRouter(prefix="/models", tags=["models"], route_class=WholeFormRoute)

COMPARE_FORM_SCHEMA = multipart_form(
    {
        "model_ids": {
            "type": "array",
            "items": {"type": "string"},
            "description": "2 to 10 models (repeat the field, or separate ids with commas).",
        },
        "dataset_id": {
            "type": "string",
            "description": "Judge on this dataset's labelled photos that none of the models trained on.",
        },
        "label1": {"type": "string", "description": "Or upload labelled photos: label1..N ..."},
        "files1": {**FILES_PROP, "description": "... with files1..N"},
        "archive": ARCHIVE_PROP,
    },
    required_fields=("model_ids",),
)


@router.post(
    "/compare",
    responses=ERROR_RESPONSES,
    openapi_extra=COMPARE_FORM_SCHEMA,
    summary="Compare models on the same photos, with a paired test",
)
async def compare_models(request: Request, services: ServicesDep, settings: SettingsDep) -> Any:
    """Per model: accuracy with its 95 % interval, per-class precision/recall/F1 and the confusion matrix;
    per pair: McNemar's test on the photos one model got right and the other wrong, and a verdict
    (`significant` when p < 0.05). Only photos whose label is a class of every model count."""
    limits = {
        "max_files": settings.max_files,
        "max_fields": settings.max_fields,
        "max_part_size": settings.max_field_kb * 1024,
    }
    async with request.form(**limits) as form:
        check_field_names(form.keys(), allowed=("model_ids", "dataset_id", "archive"), numbered=("label", "files"))
        ids = [i.strip() for value in form.getlist("model_ids") if isinstance(value, str) for i in value.split(",")]
        dataset_id = form.get("dataset_id")
        if dataset_id is not None and not isinstance(dataset_id, str):
            raise InvalidRequest("dataset_id must be text", code="invalid_parameter")
        groups, archive = image_groups(form), parse_archive(form)
        upload = AddImages(groups=groups, archive=archive) if groups or archive is not None else None
        return await run_in_threadpool(
            compare.compare_models, services, [i for i in ids if i], dataset_id=dataset_id or None, upload=upload
        )

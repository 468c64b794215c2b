"""POST /predict (one image) and POST /predict/batch (many)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from ...services import prediction
from ...services.errors import InvalidRequest
from ..deps import ServicesDep
from ..schemas import ERROR_RESPONSES, BatchPredictionPublic, PredictionPublic

router = APIRouter(tags=["prediction"])

ModelIdField = Annotated[str | None, Form(description="Model to use; default: the default alias, else the newest.")]
TopKField = Annotated[int | None, Form(ge=1, description="Ranked labels to return; default min(5, classes), clamped.")]
MinConfidenceField = Annotated[
    float, Form(ge=0.0, le=1.0, description='Below this top confidence the prediction is "unknown".')
]


@router.post("/predict", response_model=PredictionPublic, responses=ERROR_RESPONSES, summary="Classify one image")
async def predict(
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="The image to classify.")],
    model_id: ModelIdField = None,
    top_k: TopKField = None,
    min_confidence: MinConfidenceField = 0.0,
) -> Any:
    """Answers `prediction` and `confidence` (the seed's names; temperature-calibrated) plus `model_id`
    and `top_k`. 409 `no_model` before any model exists; 415/413/422 for files that are not usable images."""
    data = await file.read()
    return await run_in_threadpool(
        prediction.predict_image, services, data, model_id=model_id or None, top_k=top_k,
        min_confidence=min_confidence,
    )


@router.post("/predict/batch", response_model=BatchPredictionPublic, responses=ERROR_RESPONSES,
             summary="Classify many images in one request")
async def predict_batch(
    services: ServicesDep,
    files: Annotated[list[UploadFile], File(description="The images (at most VT_MAX_BATCH_FILES).")],
    model_id: ModelIdField = None,
    top_k: TopKField = None,
    min_confidence: MinConfidenceField = 0.0,
) -> Any:
    """One entry per file, in order; a file that is not a usable image gets `error: {code, detail}`
    in its place without failing the others."""
    limit = services.settings.max_batch_files
    if len(files) > limit:
        raise InvalidRequest(f"{len(files)} files; at most {limit} per batch (VT_MAX_BATCH_FILES)",
                             code="too_many_files")
    contents = [(f.filename or "", await f.read()) for f in files]
    return await run_in_threadpool(
        prediction.predict_batch, services, contents, model_id=model_id or None, top_k=top_k,
        min_confidence=min_confidence,
    )

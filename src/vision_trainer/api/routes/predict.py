"""POST /predict: one image -> label and confidence."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from ...services import prediction
from ..deps import ServicesDep
from ..schemas import ERROR_RESPONSES, PredictionPublic

router = APIRouter(tags=["prediction"])


@router.post("/predict", response_model=PredictionPublic, responses=ERROR_RESPONSES, summary="Classify one image")
async def predict(
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="The image to classify.")],
    model_id: Annotated[str | None, Form(description="Model to use; default: the newest one.")] = None,
    top_k: Annotated[
        int | None, Form(ge=1, description="How many ranked labels to return; default min(5, classes).")
    ] = None,
) -> Any:
    """Answers `prediction` and `confidence` (the seed's names) plus `model_id` and `top_k`.
    409 `no_model` before any model exists; 415/413/422 for files that are not usable images."""
    data = await file.read()
    return await run_in_threadpool(
        prediction.predict_image, services, data, model_id=model_id or None, top_k=top_k
    )

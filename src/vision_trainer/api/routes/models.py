"""Model registry: list, inspect, download the checkpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from ...services import models
from ..deps import ServicesDep
from ..schemas import ERROR_RESPONSES, ModelList, ModelPublic

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ModelList, summary="List trained models, newest first")
async def list_models(
    services: ServicesDep, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)
) -> Any:
    return await run_in_threadpool(models.list_models, services, limit=limit, offset=offset)


@router.get("/{model_id}", response_model=ModelPublic, responses=ERROR_RESPONSES, summary="One model")
async def get_model(model_id: str, services: ServicesDep) -> Any:
    """Name, classes, backbone, training parameters, data summary, per-epoch history and metrics."""
    return await run_in_threadpool(models.get_model, services, model_id)


@router.get(
    "/{model_id}/checkpoint",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **ERROR_RESPONSES},
    summary="Download trained_model.pth",
)
async def download_checkpoint(model_id: str, services: ServicesDep) -> FileResponse:
    path = await run_in_threadpool(models.checkpoint_file, services, model_id)
    return FileResponse(path, media_type="application/octet-stream", filename="trained_model.pth")

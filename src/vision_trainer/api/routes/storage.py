"""GET /storage: what the stored data takes; the VT_MAX_DATA_MB check that runs before an upload is read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from ...services import storage
from ..deps import ServicesDep
from ..schemas import ERROR_RESPONSES, StorageUsage

router = APIRouter(tags=["service"])


@router.get("/storage", response_model=StorageUsage, responses=ERROR_RESPONSES, summary="Bytes the stored data takes")
async def get_storage(services: ServicesDep) -> Any:
    """Bytes taken by images (datasets and v1 job uploads), models, the feature cache, exported backbones and
    the database, their `total_bytes`, the `limit_bytes` (VT_MAX_DATA_MB; null: none) and the `free_bytes`
    of the data dir's file system. Measured at most every two seconds."""
    return await run_in_threadpool(storage.storage_usage, services)

"""GET /storage: what the stored data takes; the VT_MAX_DATA_MB check that runs before an upload is read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ...services import storage
from ...services.context import Services
from ..deps import ServicesDep
from ..schemas import ERROR_RESPONSES, StorageUsage

router = APIRouter(tags=["service"])


@router.get("/storage", response_model=StorageUsage, responses=ERROR_RESPONSES, summary="Bytes the stored data takes")
async def get_storage(services: ServicesDep) -> Any:
    """Bytes taken by images (datasets and v1 job uploads), models, the feature cache, exported backbones and
    the database, their `total_bytes`, the `limit_bytes` (VT_MAX_DATA_MB; null: none) and the `free_bytes`
    of the data dir's file system. Measured at most every two seconds."""
    return await run_in_threadpool(storage.storage_usage, services)


def declared_bytes(request: Request) -> int | None:
    """The request's Content-Length, when it sent a usable one."""
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def check_upload_room(request: Request, services: Services) -> int | None:
    """Refuse (507 ``storage_full``) before the body is read when the stored data is, or with this request
    would be, over VT_MAX_DATA_MB. Returns the declared size for the service, which checks again."""
    declared = declared_bytes(request)
    await run_in_threadpool(storage.check_room, services, declared)
    return declared

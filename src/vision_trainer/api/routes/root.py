"""GET / and health checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from ... import __version__
from ...services.backbones import backbone_overview
from ..deps import ServicesDep
from ..errors import error_response
from ..schemas import HealthStatus, ServiceInfo

router = APIRouter(tags=["service"])


@router.get("/", response_model=ServiceInfo, summary="Service status")
async def root(services: ServicesDep) -> Any:
    """The seed's `message`, plus version, device, backbone runtime (onnx or torch), the backbone a request without one gets (and why),
    every backbone with whether its pretrained weights are available, and `ui`, the path of the web page."""
    overview = await run_in_threadpool(backbone_overview, services.settings)
    return {
        "message": "Vision Trainer API is running",
        "version": __version__,
        "device": services.device,
        "runtime": services.runtime.kind,
        **overview,
        "ui": "/ui",
    }


@router.get("/health/live", response_model=HealthStatus, summary="The process answers")
async def live() -> Any:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    response_model=HealthStatus,
    responses={503: {"description": "Database or data dir unusable"}},
    summary="The database and data dir are usable",
)
async def ready(services: ServicesDep) -> Any:
    try:
        await run_in_threadpool(services.db.ping)
    except Exception as exc:
        return error_response(503, f"database unavailable: {exc}", "not_ready")
    if not services.files.is_writable():
        return error_response(503, f"data dir {services.files.root} is not writable", "not_ready")
    return {"status": "ok"}

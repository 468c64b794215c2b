"""GET / and health checks."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from ... import __version__
from ...services.backbones import backbone_overview
from ...services.context import Services
from ...services.errors import is_database_outage
from ...services.storage import last_storage_usage, storage_usage
from ..deps import ServicesDep
from ..errors import error_response
from ..schemas import HealthStatus, ServiceInfo

log = logging.getLogger(__name__)
router = APIRouter(tags=["service"])


@router.get("/", response_model=ServiceInfo, summary="Service status")
async def root(services: ServicesDep) -> Any:
    """The seed's `message`, plus version, device, backbone runtime (onnx or torch), the backbone a request without one gets (and why),
    every backbone with whether its pretrained weights are available, `ui`, the path of the web page, and
    `storage`, the bytes the stored data takes (as GET /storage, measured every few seconds; null when the
    database cannot be reached and nothing was measured before)."""
    usage = last_storage_usage(services)
    if usage is None:  # nothing measured yet, or something changed since: measure in a thread
        return await run_in_threadpool(lambda: _root(services, _usage_or_none(services)))
    # Dashboards poll this: answered without a trip to a thread, which under a crowd of event
    # streams waits its turn in the event loop twice.
    return _root(services, usage)


def _root(services: Services, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "message": "Vision Trainer API is running",
        "version": __version__,
        "device": services.device,
        "runtime": services.runtime.kind,
        **backbone_overview(services.settings),
        "ui": "/ui",
        "storage": usage,
    }


def _usage_or_none(services: Services) -> dict[str, Any] | None:
    """GET / answers during a database outage too, without the storage figures."""
    try:
        return storage_usage(services)
    except SQLAlchemyError as exc:
        if not is_database_outage(exc):
            raise
        return None


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
    except Exception as exc:  # the reason goes to the log only: it can name hosts, users and paths
        log.warning(
            "readiness check: the database cannot be reached: %s",
            str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__,
        )
        return error_response(503, "the database is unavailable; the server log says why", "not_ready")
    if not services.files.is_writable():
        log.warning("readiness check: data dir %s is not writable", services.files.root)
        return error_response(503, "the data dir is not writable; the server log says which", "not_ready")
    return {"status": "ok"}

"""Jobs: list, inspect, cancel, and stream their events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from ...services import jobs as job_service
from ...services.context import Services
from ..deps import LimitQuery, OffsetQuery, QueueDep, ServicesDep
from ..schemas import ERROR_RESPONSES, JobList, JobPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])

EVENT_POLL_S = 0.25


@router.get("", response_model=JobList, summary="List jobs, newest first")
async def list_jobs(
    services: ServicesDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> Any:
    return await run_in_threadpool(job_service.list_jobs, services, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobPublic, responses=ERROR_RESPONSES, summary="One job")
async def get_job(job_id: str, services: ServicesDep) -> Any:
    """Status, progress (phase, done, total), epoch, the log so far, metrics, model id and error."""
    return await run_in_threadpool(job_service.get_job, services, job_id)


@router.post(
    "/{job_id}/cancel", status_code=202, response_model=JobPublic, responses=ERROR_RESPONSES,
    summary="Cancel a queued or running job",
)
async def cancel_job(job_id: str, services: ServicesDep, queue: QueueDep) -> Any:
    """A queued job is cancelled at once; a running one stops at its next batch. 409 once it ended."""
    job = await run_in_threadpool(job_service.cancel_job, services, queue, job_id)
    return JSONResponse(job, status_code=202)


@router.delete("/{job_id}", status_code=204, responses=ERROR_RESPONSES, summary="Delete an ended job")
async def delete_job(job_id: str, services: ServicesDep) -> Response:
    """Removes the job and its uploaded images; its model, if any, stays. 409 `job_active` while it is
    queued or running."""
    await run_in_threadpool(job_service.delete_job, services, job_id)
    return Response(status_code=204)


async def _event_stream(services: Services, job_id: str, request: Request, after: int) -> AsyncIterator[dict]:
    while True:
        events = await run_in_threadpool(job_service.job_events, services, job_id, after)
        for event_id, kind, data in events:
            after = event_id
            yield {"id": str(event_id), "event": kind, "data": json.dumps(data)}
            if kind == "status" and data.get("status") in job_service.FINAL_STATUSES:
                return
        if not events:
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_POLL_S)


@router.get(
    "/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
    summary="Stream a job's progress, log lines and final status (Server-Sent Events)",
)
async def job_events(job_id: str, request: Request, services: ServicesDep) -> EventSourceResponse:
    """Events, replayed from the job's start (or after `Last-Event-ID`): `progress`
    `{phase, done, total, epoch}`, `log` `{line}`, and last `status` `{status, model_id, error}`."""
    await run_in_threadpool(job_service.get_job, services, job_id)  # 404 before streaming starts
    last = request.headers.get("last-event-id", "0")
    after = int(last) if last.isdigit() else 0
    return EventSourceResponse(_event_stream(services, job_id, request, after), ping=15)

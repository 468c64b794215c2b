"""Jobs: list, inspect, cancel, and stream their events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from ...services import jobs as job_service
from ..cache import shared_answer
from ..deps import LimitQuery, OffsetQuery, QueueDep, ServicesDep
from ..schemas import ERROR_RESPONSES, JobList, JobPublic
from ..streams import EventStreamResponse, LiveUpdates

router = APIRouter(prefix="/jobs", tags=["jobs"])

MAX_EVENT_ID = 2**63 - 1  # event ids are 64-bit database integers


def last_event_id(value: str) -> int:
    """The event id a reconnecting stream continues after: ``Last-Event-ID`` when it is an ASCII integer
    of at most 19 digits within the 64-bit range (what this server sends); anything else replays from the
    start, as a missing header does. (``str.isdigit`` alone takes '²', and ``int`` of thousands of digits
    raises.)"""
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 19):
        return 0
    number = int(value)
    return number if number <= MAX_EVENT_ID else 0


@router.get("", response_model=JobList, summary="List jobs, newest first")
async def list_jobs(request: Request, services: ServicesDep, limit: LimitQuery = 50, offset: OffsetQuery = 0) -> Any:
    """Requests arriving together share one answer, at most a second old and recomputed after any change."""
    return await shared_answer(
        request,
        ("jobs", limit, offset),
        lambda: run_in_threadpool(job_service.list_jobs, services, limit=limit, offset=offset),
    )


@router.get("/{job_id}", response_model=JobPublic, responses=ERROR_RESPONSES, summary="One job")
async def get_job(job_id: str, services: ServicesDep) -> Any:
    """Status, progress (phase, done, total), epoch, the log so far, metrics, model id and error."""
    return await run_in_threadpool(job_service.get_job, services, job_id)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobPublic,
    responses=ERROR_RESPONSES,
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


@router.get(
    "/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
    summary="Stream a job's progress, log lines and final status (Server-Sent Events)",
)
async def job_events(job_id: str, request: Request) -> EventSourceResponse:
    """Events, replayed from the job's start (or after `Last-Event-ID`): `progress`
    `{phase, done, total, epoch}`, `log` `{line}`, and last `status` `{status, model_id, error}`.
    503 `too_many_streams` (with `Retry-After`) while `VT_MAX_EVENT_STREAMS` streams are open."""
    after = last_event_id(request.headers.get("last-event-id", ""))
    live: LiveUpdates = request.app.state.live
    # Joins the job's one shared subscription and reads the replay; 404 before streaming starts.
    return EventStreamResponse(await live.events.open(job_id, after), live)

"""The answer of every route that queues a job: 202 with where to follow it, or with ``wait`` the ended job."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..services import jobs as job_service
from ..services.context import Services
from ..services.work.runner import final_message, queued_message

WAIT_POLL_S = 0.25


async def job_answer(services: Services, job: dict[str, Any], *, wait: bool) -> JSONResponse:
    """202 with where to follow a queued job; with ``wait``, 200 with the job once it ended."""
    job_id = job["job_id"]
    if not wait:
        return JSONResponse(
            {
                "message": queued_message(job),
                "job_id": job_id,
                "status": job["status"],
                "status_url": f"/jobs/{job_id}",
                "dataset_id": job["dataset_id"],
                "log": job["log"],
            },
            status_code=202,
        )
    while job["status"] not in job_service.FINAL_STATUSES:
        await asyncio.sleep(WAIT_POLL_S)
        job = await run_in_threadpool(job_service.get_job, services, job_id)
    return JSONResponse({**job, "message": final_message(job)}, status_code=200)

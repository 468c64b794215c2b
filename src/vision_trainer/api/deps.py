"""Typed dependency aliases, in one place."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from ..services.context import Services
from ..services.queue import JobQueue
from ..settings import Settings


# Coroutines, though they only read app.state: FastAPI runs a plain function dependency in its thread
# pool, a round trip through the event loop for every request that, under a crowd of event streams,
# made a quick request wait behind the crowd.
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]

LimitQuery = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
# Bounded: an offset past 64 bits used to overflow SQLite (found by schemathesis).
OffsetQuery = Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")]

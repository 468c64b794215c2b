"""Typed dependency aliases, in one place."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..services.context import Services
from ..services.queue import JobQueue
from ..settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]

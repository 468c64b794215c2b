"""The FastAPI app factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..jobs.local import LocalJobQueue
from ..services.backbones import choose_backbone
from ..services.context import Services
from ..settings import Settings, get_settings
from .errors import install_error_handlers
from .routes import jobs, models, predict, root, train

log = logging.getLogger("vision_trainer")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the database, data dir and job runner start with the app's lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.create(settings)
        queue = LocalJobQueue(services, max_concurrent=settings.max_concurrent_jobs)
        app.state.services, app.state.queue = services, queue
        log.info("%s; device %s; data dir %s", choose_backbone(settings, None).note, services.device,
                 services.files.root)
        queue.start()
        try:
            yield
        finally:
            queue.shutdown()
            services.close()

    app = FastAPI(
        title="Vision Trainer",
        version=__version__,
        description="Upload labelled photos, train an image classifier in the background, predict.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for module in (root, train, jobs, models, predict):
        app.include_router(module.router)
    return app

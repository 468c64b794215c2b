"""The FastAPI app factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..jobs import make_job_queue
from ..services.backbones import choose_backbone
from ..services.context import Services
from ..settings import Settings, get_settings
from .errors import install_error_handlers
from .limits import BodyLimits, RequestSizeLimit
from .metrics import Metrics
from .metrics import router as metrics_router
from .routes import compare, datasets, jobs, models, predict, root, storage, train
from .schemas import AUTH_RESPONSES, ERROR_RESPONSES
from .security import RequestGuard, require_api_key
from .streams import LiveUpdates

log = logging.getLogger("vision_trainer")
WEB_DIR = Path(__file__).resolve().parents[1] / "web"
UI_PATH = "/ui"


def body_limits(settings: Settings) -> BodyLimits:
    return BodyLimits(
        max_upload_bytes=settings.max_request_bytes,
        max_body_bytes=settings.max_body_kb * 1024,
        body_timeout_s=settings.body_timeout_s,
        min_rate_bytes_s=settings.min_upload_rate_kb * 1024,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the database, data dir and job runner start with the app's lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.create(settings)
        queue = make_job_queue(services)
        live = LiveUpdates(services, queue)
        app.state.services, app.state.queue, app.state.live = services, queue, live
        live.start()
        app.state.metrics.attach(services, live.events)
        log.info(
            "%s; device %s; data dir %s; jobs run by the %s backend",
            choose_backbone(settings, None).note,
            services.device,
            services.files.root,
            settings.job_backend,
        )
        queue.start()
        try:
            yield
        finally:
            queue.shutdown()
            await live.close()
            app.state.metrics.detach()
            services.close()

    app = FastAPI(
        title="Vision Trainer",
        version=__version__,
        description="Upload labelled photos, train an image classifier in the background, predict. "
        "When the server has API keys, send one as `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
        lifespan=lifespan,
        form_limits={
            "max_files": settings.max_files,
            "max_fields": settings.max_fields,
            "max_part_size": settings.max_field_kb * 1024,
        },
    )
    app.state.settings = settings
    app.state.predict_slots = threading.BoundedSemaphore(settings.max_inflight_predictions)
    app.state.metrics = Metrics()
    install_error_handlers(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID"],
        )
    app.add_middleware(RequestSizeLimit, limits=body_limits(settings))
    # Outermost: Host, cross-site and API-key checks come before anything reads the body.
    app.add_middleware(RequestGuard, settings=settings)
    app.include_router(root.router)
    protected = [Depends(require_api_key)]
    for router in (
        train.router,
        datasets.router,
        jobs.router,
        compare.router,
        models.router,
        predict.router,
        storage.router,
        metrics_router,
    ):
        app.include_router(router, dependencies=protected, responses={**ERROR_RESPONSES, **AUTH_RESPONSES})
    # The web page: static files only (it talks to the API above), open like GET /; no outside assets.
    app.mount(UI_PATH, StaticFiles(directory=WEB_DIR, html=True), name="ui")
    return app

"""GET /metrics in the Prometheus text format.

Job numbers come from the job table at scrape time (a custom collector), because under Celery the
jobs run in other processes; prediction latency and loaded models are this API process's own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..services.context import Services
from ..services.events import JobEventHub
from ..services.stats import job_stats

router = APIRouter(tags=["service"])

PREDICT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class JobTableCollector(Collector):
    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Any]:
        stats = job_stats(self.services)
        jobs = GaugeMetricFamily("vision_trainer_jobs", "Jobs in the database by status.", labels=["status"])
        for status, count in stats.by_status.items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "vision_trainer_queue_depth", "Jobs waiting for a worker.", value=stats.by_status.get("queued", 0)
        )
        buckets = [(str(bound), count) for bound, count in stats.duration_buckets]
        yield HistogramMetricFamily(
            "vision_trainer_training_duration_seconds",
            "Seconds from claim to saved model, succeeded jobs.",
            buckets=[*buckets, ("+Inf", stats.duration_count)],
            sum_value=stats.duration_sum,
        )
        yield GaugeMetricFamily(
            "vision_trainer_training_images_per_second",
            "Uploaded images / training seconds of the last succeeded job.",
            value=stats.last_images_per_s or 0.0,
        )
        yield GaugeMetricFamily("vision_trainer_models", "Models in the registry.", value=stats.models)
        yield GaugeMetricFamily(
            "vision_trainer_models_loaded",
            "Models held in memory by this API process.",
            value=len(self.services.predictors),
        )


class EventStreamCollector(Collector):
    """The live event streams of this API process (``services/events``)."""

    def __init__(self, hub: JobEventHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "vision_trainer_event_streams", "Open GET /jobs/{id}/events streams.", value=self.hub.open_streams
        )
        yield GaugeMetricFamily(
            "vision_trainer_event_subscriptions",
            "Jobs with live event streams (one shared database subscription each).",
            value=len(self.hub.channels),
        )
        yield CounterMetricFamily(
            "vision_trainer_event_streams_dropped",
            "Streams ended because their client fell too far behind (it replays on reconnect).",
            value=self.hub.dropped,
        )


class Metrics:
    """One registry per app, so several apps in one process (tests) never clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.predict_latency = Histogram(
            "vision_trainer_predict_latency_seconds",
            "Time to answer a prediction request.",
            ["endpoint"],
            buckets=PREDICT_BUCKETS,
            registry=self.registry,
        )
        self._collectors: list[Collector] = []

    def attach(self, services: Services, hub: JobEventHub) -> None:
        self._collectors = [JobTableCollector(services), EventStreamCollector(hub)]
        for collector in self._collectors:
            self.registry.register(collector)

    def detach(self) -> None:
        for collector in self._collectors:
            self.registry.unregister(collector)
        self._collectors = []

    @contextmanager
    def timed_prediction(self, endpoint: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.predict_latency.labels(endpoint).observe(time.perf_counter() - start)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
async def metrics(request: Request) -> Response:
    """Jobs by status, queue depth, training duration histogram and images per second (from the
    database, so remote workers' jobs count), prediction latency histogram, models loaded, and this
    process's open event streams."""
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)

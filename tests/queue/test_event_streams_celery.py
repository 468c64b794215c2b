"""Live job events under Celery: the job trains on a worker, the streams are on the API, and the
worker's events reach the API through one Redis pub/sub subscription (real Redis, PostgreSQL, API and
worker processes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from vision_trainer.jobs.redis_events import CHANNEL

from ..api.test_event_streams import read_events, wait_until
from ..conftest import wait_for_job
from .test_celery import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def celery_cluster(tmp_path, redis_server, postgres_url) -> Iterator[Cluster]:
    """An API with VT_JOB_BACKEND=celery (no worker yet) on fresh Redis and PostgreSQL databases."""
    redis_server.flush()
    env = {
        "VT_JOB_BACKEND": "celery",
        "VT_BROKER_URL": redis_server.url,
        "VT_DATABASE_URL": postgres_url,
        "VT_AUGMENT_VIEWS": "0",
    }
    started = Cluster(tmp_path, env)
    yield started
    started.stop()


def metric(cluster: Cluster, name: str) -> float:
    for line in cluster.client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_streams_on_the_api_follow_a_job_on_a_worker_through_one_subscription(
    celery_cluster: Cluster, redis_server
) -> None:
    cluster = celery_cluster
    heard: list[str] = []
    listener = redis_server.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(CHANNEL)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = listener.get_message(timeout=0.5)
            if message:
                heard.extend(message["data"].decode().split())

    listening = threading.Thread(target=listen)
    listening.start()
    try:
        cluster.start_workers(1)
        job_id = cluster.submit(per_class=20, size=96, views=2, epochs=3)
        url = f"http://127.0.0.1:{cluster.api.port}"
        with ThreadPoolExecutor(20) as pool:
            early = [pool.submit(read_events, url, job_id) for _ in range(10)]
            wait_until(lambda: metric(cluster, "vision_trainer_event_streams") == 10, "10 streams opened", 60)
            # The API holds one subscription, whatever the number of streams; the test's is the other.
            assert redis_server.client.pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 2)]
            wait_for_job(cluster.client, job_id, timeout=120, until=lambda j: j["progress"]["done"] > 0)
            late = [pool.submit(read_events, url, job_id) for _ in range(10)]  # replay, then live
            results = [future.result(timeout=300) for future in early + late]
        reference = read_events(url, job_id)
    finally:
        stop.set()
        listening.join(10)
        listener.close()

    assert reference[-1][1] == "status" and reference[-1][2]["status"] == "succeeded"
    assert all(result == reference for result in results)
    assert job_id in heard  # the worker announced its commits on Redis
    job = wait_for_job(cluster.client, job_id)
    assert [d["line"] for _, kind, d in reference if kind == "log"] == job["log"]
    wait_until(lambda: metric(cluster, "vision_trainer_event_streams") == 0, "every stream closed")
    assert metric(cluster, "vision_trainer_event_subscriptions") == 0

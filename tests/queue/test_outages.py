"""Outages under the Celery backend, staged on real servers while a worker trains: PostgreSQL stopped for
longer than the heartbeat timeout, Redis killed and restarted. Each job finishes exactly once, and the
API never answers 500 meanwhile (GET /jobs/{id} is polled through the outage)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..servers import PostgresServer, RedisServer, http_client
from .test_celery import Cluster, assert_each_job_succeeded_once

pytestmark = pytest.mark.slow

FINAL = ("succeeded", "failed", "cancelled")
OUTAGE_S = 8  # longer than VT_HEARTBEAT_TIMEOUT_S below: every heartbeat looks stale when it is back


class Poller:
    """GET a job every 0.2 s from a thread of its own, recording every status code (or transport error)."""

    def __init__(self, base_url: str, job_id: str) -> None:
        self.client = http_client(base_url, timeout=30)
        self.path = f"/jobs/{job_id}"
        self.codes: Counter[int | str] = Counter()
        self.last: dict | None = None
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                response = self.client.get(self.path)
            except httpx.TransportError as exc:
                self.codes[type(exc).__name__] += 1
                continue
            self.codes[response.status_code] += 1
            if response.status_code == 200:
                self.last = response.json()
            elif response.status_code >= 500 and response.json().get("code") != "database_unavailable":
                self.failures.append(response.text)

    def wait_final(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while not (self.last and self.last["status"] in FINAL):
            assert time.monotonic() < deadline, f"the job did not end in {timeout} s: {self.last}"
            time.sleep(0.2)
        return self.last

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()


def celery_env(broker_url: str, database_url: str) -> dict[str, str]:
    return {
        "VT_JOB_BACKEND": "celery",
        "VT_BROKER_URL": broker_url,
        "VT_DATABASE_URL": database_url,
        "VT_AUGMENT_VIEWS": "0",
        "VT_HEARTBEAT_INTERVAL_S": "0.5",
        "VT_HEARTBEAT_TIMEOUT_S": "5",
        "VT_SWEEP_INTERVAL_S": "1",
    }


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own: stopping it disturbs no other test."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def start_long_job(cluster: Cluster) -> tuple[str, Poller]:
    cluster.start_workers(1)
    job_id = cluster.submit(per_class=40, size=160, views=4, epochs=3)
    poller = Poller(str(cluster.client.base_url), job_id)
    deadline = time.monotonic() + 180
    while not (poller.last and poller.last["progress"]["done"] > 0):  # training when the outage starts
        assert time.monotonic() < deadline, poller.last
        time.sleep(0.1)
    return job_id, poller


def test_postgres_stopped_while_a_worker_trains(tmp_path: Path, redis_server, own_postgres, capsys) -> None:
    redis_server.flush()
    cluster = Cluster(tmp_path, celery_env(redis_server.url, own_postgres.create_database()))
    try:
        job_id, poller = start_long_job(cluster)
        before = poller.last["progress"]
        own_postgres.halt()
        time.sleep(OUTAGE_S)
        own_postgres.start()
        job = poller.wait_final(timeout=300)
        poller.stop()
        assert poller.failures == [] and 500 not in poller.codes, poller.codes
        assert poller.codes[503] > 0, poller.codes  # the outage was seen by the API, as 503
        assert set(poller.codes) <= {200, 503}, poller.codes
        (job,) = assert_each_job_succeeded_once(cluster, [job_id])
        assert job["attempts"] == 1 and not any(line.startswith("Re-queued") for line in job["log"])
        worker_log = cluster.workers[0].log_path.read_text(errors="replace")
        assert "the database cannot be reached" in worker_log and "the database is back" in worker_log
        assert cluster.client.get("/health/ready").status_code == 200
        with capsys.disabled():
            print(
                f"\nPostgreSQL down {OUTAGE_S} s at {before['phase']} {before['done']}/{before['total']}: "
                f"GET /jobs/{{id}} answered {dict(poller.codes)}; the job succeeded, attempts {job['attempts']}"
            )
    finally:
        cluster.stop()


def test_redis_killed_and_restarted_while_a_worker_trains(tmp_path: Path, own_redis, postgres_url, capsys) -> None:
    cluster = Cluster(tmp_path, celery_env(own_redis.url, postgres_url))
    try:
        job_id, poller = start_long_job(cluster)
        own_redis.kill()
        time.sleep(3)
        own_redis.start()  # empty: the message of the running job is gone with it
        job = poller.wait_final(timeout=300)
        poller.stop()
        assert poller.failures == [] and set(poller.codes) == {200}, poller.codes
        next_job = cluster.submit()  # the API and the worker are on the new broker again
        jobs = assert_each_job_succeeded_once(cluster, [job_id, next_job])
        assert [j["attempts"] for j in jobs] == [1, 1]
        with capsys.disabled():
            print(
                f"\nRedis killed mid-job and restarted 3 s later: GET /jobs/{{id}} answered {dict(poller.codes)}; "
                f"the job succeeded, attempts {job['attempts']}; a job submitted afterwards succeeded too"
            )
    finally:
        cluster.stop()

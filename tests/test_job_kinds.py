"""A new kind of job is one module and one registry line: a test-only kind (tests/count_kind.py) runs
through the real machinery — claim, progress, cancel and restart recovery — under the local runner and
under Celery workers, with no dataset, no model and no edit to the machinery."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from vision_trainer.jobs.local import LocalJobQueue
from vision_trainer.services import jobs
from vision_trainer.services.context import Services
from vision_trainer.services.kinds import KINDS
from vision_trainer.services.submit import queue_job
from vision_trainer.services.work import recovery
from vision_trainer.services.work.runner import final_message
from vision_trainer.store import repository as repo
from vision_trainer.store.tables import Job

from .conftest import make_settings
from .count_kind import WORKER_WITH_COUNT_KIND, CountParams, count_kind_registered

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    with count_kind_registered():
        created = Services.create(make_settings(tmp_path / "data", heartbeat_interval_s=0.2))
        yield created
        created.close()


class HeldQueue:
    """A queue that holds ids until a runner is started (as a server that is not up yet)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def enqueue(self, job_id: str) -> None:
        self.ids.append(job_id)

    def cancel(self, job_id: str) -> None:
        return None


def wait_until(services: Services, job_id: str, until, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = jobs.get_job(services, job_id)
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def ended(job: dict) -> bool:
    return job["status"] in jobs.FINAL_STATUSES


def test_the_registry_names_the_kinds_and_refuses_a_second_of_one_name(services) -> None:
    assert KINDS.list_kinds() == ["analyze", "count", "export", "train"]
    assert KINDS.resolve_kind(None).name == "train"  # rows written before kinds had names
    with pytest.raises(ValueError, match="registered already"):
        KINDS.register_kind(KINDS.resolve_kind("count"))


def test_a_new_kind_runs_with_progress_and_its_own_messages_under_the_local_runner(services) -> None:
    runner = LocalJobQueue(services, max_concurrent=1)
    try:
        job = queue_job(services, runner, kind="count", params=CountParams(steps=5))
        assert job["kind"] == "count" and job["dataset_id"] is None and job["class_names"] == []
        done = wait_until(services, job["job_id"], ended)
    finally:
        runner.shutdown()
    assert done["status"] == "succeeded" and done["metrics"] == {"counted": 5} and done["model_id"] is None
    assert done["log"][0].startswith("Counting to 5 (worker ") and done["log"][-1] == "Counted to 5"
    assert final_message(done) == "Counted to 5"
    progress = [data for _, kind, data in jobs.job_events(services, done["job_id"], 0) if kind == "progress"]
    assert [p["done"] for p in progress if p["phase"] == "counting"][-1] == 5
    assert done["progress"] == {"phase": "done", "done": 5, "total": 5}


def test_a_new_kind_is_cancelled_mid_run(services) -> None:
    runner = LocalJobQueue(services, max_concurrent=1)
    try:
        job = queue_job(services, runner, kind="count", params=CountParams(steps=2000, step_s=0.01))
        wait_until(services, job["job_id"], lambda j: j["progress"]["done"] > 0)
        jobs.cancel_job(services, runner, job["job_id"])
        done = wait_until(services, job["job_id"], ended)
    finally:
        runner.shutdown()
    assert done["status"] == "cancelled" and done["progress"]["done"] < 2000
    assert final_message(done) == "Counting was cancelled"


def test_a_new_kind_left_running_by_a_dead_server_runs_again_at_the_next_start(services) -> None:
    held = HeldQueue()
    job = queue_job(services, held, kind="count", params=CountParams(steps=3))
    dead = f"{os.uname().nodename}:999999999#deadbeef"  # a process of this host that has ended
    with services.db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job["job_id"])
            .values(status="running", worker_id=dead, heartbeat_at=repo.now(), attempts=1)
        )
    runner = LocalJobQueue(services, max_concurrent=1)
    runner.start()
    try:
        done = wait_until(services, job["job_id"], ended)
    finally:
        runner.shutdown()
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert any(line.startswith("Re-queued: the server stopped while this job ran") for line in done["log"])


def test_a_kind_without_inputs_never_stops_a_worker_from_starting(services) -> None:
    queue_job(services, HeldQueue(), kind="count", params=CountParams())
    assert recovery.waiting_jobs_without_images(services) == []


@pytest.mark.slow
def test_a_new_kind_runs_and_is_cancelled_on_a_celery_worker(tmp_path, redis_server, postgres_url) -> None:
    from vision_trainer.jobs.celery_queue import CeleryJobQueue

    redis_server.flush()
    env = {
        "VT_DATA_DIR": str(tmp_path / "data"),
        "VT_JOB_BACKEND": "celery",
        "VT_BROKER_URL": redis_server.url,
        "VT_DATABASE_URL": postgres_url,
        "VT_HEARTBEAT_INTERVAL_S": "0.5",
    }
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER_WITH_COUNT_KIND, "worker", "--concurrency", "1"],
            cwd=REPO,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with count_kind_registered():
        services = Services.create(
            make_settings(
                tmp_path / "data", job_backend="celery", broker_url=redis_server.url, database_url=postgres_url
            )
        )
        queue = CeleryJobQueue(services)
        try:
            deadline = time.monotonic() + 120
            while " ready." not in log.read_text(errors="replace"):
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            short = queue_job(services, queue, kind="count", params=CountParams(steps=4))
            done = wait_until(services, short["job_id"], ended, timeout=120)
            assert done["status"] == "succeeded" and done["metrics"] == {"counted": 4}
            assert done["worker"].startswith(f"{os.uname().nodename}:{worker.pid}#")
            long = queue_job(services, queue, kind="count", params=CountParams(steps=5000, step_s=0.01))
            wait_until(services, long["job_id"], lambda j: j["progress"]["done"] > 0, timeout=120)
            jobs.cancel_job(services, queue, long["job_id"])
            cancelled = wait_until(services, long["job_id"], ended, timeout=60)
            assert cancelled["status"] == "cancelled" and cancelled["progress"]["done"] < 5000
        finally:
            queue.shutdown()
            services.close()
            os.killpg(worker.pid, 9)
            worker.wait(30)

"""Claims, heartbeats and the stale-job sweep, on the services directly (SQLite, no broker).

These rules are what keeps a job from being lost or run twice under any runner; the Celery tests
(tests/queue) show the same with real worker processes.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from vision_trainer.services import jobs
from vision_trainer.services.context import Services
from vision_trainer.services.work import recovery, runner
from vision_trainer.store import repository as repo
from vision_trainer.store.tables import Job, Model

from .conftest import make_settings, submit_job, wait_for_job


@pytest.fixture
def services(tmp_path: Path) -> Services:
    created = Services.create(
        make_settings(
            tmp_path / "data",
            augment_views=0,
            heartbeat_interval_s=0.2,
            heartbeat_timeout_s=30,
            max_attempts=2,
        )
    )
    yield created
    created.close()


class ServicesClient:
    """``wait_for_job`` polls a client; this one answers from the services."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self, path: str) -> Any:
        job = jobs.get_job(self.services, path.rsplit("/", 1)[1])
        return type("Response", (), {"json": lambda self: job})()


def age_heartbeat(services: Services, job_id: str, seconds: float) -> None:
    with services.db.session() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=repo.now() - timedelta(seconds=seconds))
        )


def claim(services: Services, job_id: str, worker: str) -> None:
    with services.db.session() as session:
        assert repo.claim_job(session, job_id=job_id, worker_id=worker)


def models_of(services: Services, job_id: str) -> list[Model]:
    with services.db.session() as session:
        return list(session.query(Model).filter(Model.job_id == job_id))


def test_stale_job_is_requeued_then_failed_after_max_attempts(services) -> None:
    job_id = submit_job(services)
    claim(services, job_id, "dead-host:1#a")
    assert recovery.sweep_stale_jobs(services) == []  # heartbeat still fresh: left alone
    age_heartbeat(services, job_id, 60)
    assert recovery.sweep_stale_jobs(services) == [job_id]
    job = jobs.get_job(services, job_id)
    assert (job["status"], job["attempts"], job["worker"]) == ("queued", 1, None)
    assert "Re-queued: worker dead-host:1#a sent no heartbeat for 30 s" in job["log"]

    claim(services, job_id, "dead-host:2#b")  # attempt 2 of VT_MAX_ATTEMPTS=2 dies too
    age_heartbeat(services, job_id, 60)
    assert recovery.sweep_stale_jobs(services) == []
    job = jobs.get_job(services, job_id)
    assert job["status"] == "failed" and job["attempts"] == 2
    assert "attempt 2 of 2 (VT_MAX_ATTEMPTS)" in job["error"]
    assert runner.run_job(services, job_id) is None  # a finished job never runs again


def test_a_requeued_job_runs_once_and_a_finished_one_never_again(services) -> None:
    job_id = submit_job(services)
    claim(services, job_id, "dead-host:1#a")
    age_heartbeat(services, job_id, 60)
    assert recovery.sweep_stale_jobs(services) == [job_id]
    assert runner.run_job(services, job_id, worker="alive:2") == "succeeded"
    assert runner.run_job(services, job_id, worker="alive:3") is None
    job = jobs.get_job(services, job_id)
    assert job["attempts"] == 2 and job["worker"].startswith("alive:2#")
    assert len(models_of(services, job_id)) == 1
    assert len(list((services.files.root / "models").iterdir())) == 1


def test_a_worker_that_lost_its_claim_stops_and_saves_nothing(services) -> None:
    job_id = submit_job(services, per_class=30, size=160, views=4)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("status", runner.run_job(services, job_id)))
    thread.start()
    job = wait_for_job(
        ServicesClient(services),
        job_id,
        timeout=120,
        until=lambda j: j["progress"]["phase"] == "extracting" and j["progress"]["done"] > 0,
    )
    assert job["status"] == "running" and job["progress"]["done"] < job["progress"]["total"]
    with services.db.session() as session:  # what a sweep + another worker's claim leave behind
        session.execute(update(Job).where(Job.id == job_id).values(worker_id="other:9#z", heartbeat_at=repo.now()))
    thread.join(120)
    assert result["status"] is None
    job = jobs.get_job(services, job_id)
    assert job["status"] == "running" and job["worker"] == "other:9#z"
    assert models_of(services, job_id) == [] and not any((services.files.root / "models").iterdir())


def test_a_cancelled_job_whose_worker_died_ends_cancelled(services) -> None:
    job_id = submit_job(services)
    claim(services, job_id, "dead-host:1#a")
    with services.db.session() as session:
        repo.request_cancel(session, job_id=job_id)
    age_heartbeat(services, job_id, 60)
    assert recovery.sweep_stale_jobs(services) == []
    job = jobs.get_job(services, job_id)
    assert job["status"] == "cancelled" and job["model_id"] is None


def test_heartbeat_is_stamped_while_a_job_runs(services) -> None:
    job_id = submit_job(services, per_class=30, size=160, views=4)
    thread = threading.Thread(target=runner.run_job, args=(services, job_id))
    thread.start()
    first = wait_for_job(ServicesClient(services), job_id, timeout=120, until=lambda j: j["heartbeat_at"] is not None)
    later = wait_for_job(
        ServicesClient(services),
        job_id,
        timeout=120,
        until=lambda j: j["status"] != "running" or j["heartbeat_at"] != first["heartbeat_at"],
    )
    thread.join(120)
    assert later["heartbeat_at"] != first["heartbeat_at"]
    assert jobs.get_job(services, job_id)["status"] == "succeeded"


def test_a_database_from_before_heartbeats_gets_the_new_columns(tmp_path) -> None:
    from sqlalchemy import inspect

    from vision_trainer.store.db import Database
    from vision_trainer.store.migrations import v1_schema

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Database(url)
    v1_schema.metadata.create_all(old.engine)  # as v1 made it: tables, no migration record
    with old.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_jobs_heartbeat_at")
        for column in ("worker_id", "heartbeat_at", "duration_s", "images_per_s"):
            conn.exec_driver_sql(f"ALTER TABLE jobs DROP COLUMN {column}")
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, status, created_at, params, class_names, inputs, phase, done, total, "
            "cancel_requested, attempts) VALUES ('a' , 'succeeded', '2026-01-01 00:00:00', '{}', '[]', '[]', "
            "'done', 1, 1, 0, 1)"
        )
    old.dispose()
    upgraded = Database(url)
    upgraded.create_tables()
    columns = {c["name"] for c in inspect(upgraded.engine).get_columns("jobs")}
    assert {"worker_id", "heartbeat_at", "duration_s", "images_per_s"} <= columns
    assert "ix_jobs_heartbeat_at" in {i["name"] for i in inspect(upgraded.engine).get_indexes("jobs")}
    with upgraded.session() as session:
        job = repo.get_job(session, job_id="a")
        assert job.status == "succeeded" and job.worker_id is None and job.heartbeat_at is None
    upgraded.dispose()

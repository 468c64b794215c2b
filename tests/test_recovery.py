"""Who may take a running job over, and riding out a database that went away (services, SQLite)."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, OperationalError

from vision_trainer.jobs.sweeper import Sweeper
from vision_trainer.services import jobs
from vision_trainer.services.context import Services
from vision_trainer.services.work import outage, recovery
from vision_trainer.store import repository as repo
from vision_trainer.store.tables import Job

from .conftest import make_settings, submit_job

HOST = socket.gethostname()


@pytest.fixture
def services(tmp_path: Path) -> Services:
    created = Services.create(
        make_settings(tmp_path / "data", augment_views=0, heartbeat_timeout_s=30, database_retry_s=5)
    )
    yield created
    created.close()


def running_as(services: Services, claim: str, *, heartbeat_age_s: float = 0) -> str:
    job_id = submit_job(services)
    with services.db.session() as session:
        assert repo.claim_job(session, job_id=job_id, worker_id=claim)
        session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=repo.now() - timedelta(seconds=heartbeat_age_s))
        )
    return job_id


def ended_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    ("holder", "at_start", "recovered"),
    [
        (lambda: f"{HOST}:{os.getppid()}#a", True, False),  # a live process on this host: a second server
        (lambda: f"{HOST}:{ended_pid()}#a", True, True),  # its process ended (killed, crashed)
        (lambda: f"{HOST}:{ended_pid()}#a", False, True),  # found by the periodic sweep too
        (lambda: f"{HOST}:{os.getpid()}#a", True, True),  # at start, our own pid is an earlier process's
        (lambda: f"{HOST}:{os.getpid()}#a", False, False),  # later, it is this process training it
        (lambda: "elsewhere:1#a", True, False),  # another host with a fresh heartbeat: cannot be looked at
    ],
)
def test_only_jobs_whose_holder_is_dead_are_taken_over(services, holder, at_start: bool, recovered: bool) -> None:
    job_id = running_as(services, holder())
    requeued = recovery.recover_dead_jobs(services, at_start=at_start)
    job = jobs.get_job(services, job_id)
    if recovered:
        assert requeued == [job_id] and job["status"] == "queued" and job["attempts"] == 1
        assert any(line.startswith("Re-queued: the server stopped while this job ran") for line in job["log"])
    else:
        assert requeued == [] and job["status"] == "running" and job["worker"].endswith("#a")


def test_a_stale_heartbeat_is_recovered_whoever_held_it(services) -> None:
    live_here = running_as(services, f"{HOST}:{os.getppid()}#a", heartbeat_age_s=60)  # hung, or a reused pid
    elsewhere = running_as(services, "elsewhere:1#b", heartbeat_age_s=60)
    assert sorted(recovery.requeue_interrupted(services)) == sorted([live_here, elsewhere])
    assert {jobs.get_job(services, j)["status"] for j in (live_here, elsewhere)} == {"queued"}


@pytest.mark.parametrize("claim", [None, "no-pid", "host:#x"])
def test_a_claim_without_a_process_names_none(claim) -> None:
    assert recovery.claim_holder(claim) is None
    assert recovery.claim_holder("my-host:123#abc") == ("my-host", 123)


def test_writes_are_retried_while_the_database_is_away(services, monkeypatch) -> None:
    monkeypatch.setattr(outage, "RETRY_FIRST_S", 0.01)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return "written"

    assert outage.retry_on_outage(services, "test", flaky) == "written" and len(calls) == 4

    def broken() -> None:
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):  # a bug is not an outage: no retry
        outage.retry_on_outage(services, "test", broken)

    def down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    services.settings.database_retry_s = 0.2
    with pytest.raises(OperationalError):  # gives up after VT_DATABASE_RETRY_S
        outage.retry_on_outage(services, "test", down)


def test_after_an_outage_the_sweep_waits_a_heartbeat_timeout_before_judging(services, monkeypatch) -> None:
    job_id = running_as(services, "elsewhere:1#a", heartbeat_age_s=60)  # looks stale: no beat during the outage
    enqueued: list[str] = []
    sweeper = Sweeper(services, enqueued.append, recovery.sweep_stale_jobs)
    sweeper._database_down = True  # what a failed round leaves
    clock = [1000.0]
    monkeypatch.setattr("vision_trainer.jobs.sweeper.time.monotonic", lambda: clock[0])
    assert sweeper.sweep_once() == []  # back, but live workers have not had time to beat again
    clock[0] += 29
    assert sweeper.sweep_once() == [] and jobs.get_job(services, job_id)["status"] == "running"
    clock[0] += 2
    assert sweeper.sweep_once() == [job_id] and enqueued == [job_id]

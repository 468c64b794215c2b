"""The Celery backend with real servers: Redis, PostgreSQL, the API and `vision-trainer worker` processes.

Jobs are tiny (synthetic images, 1 epoch) except where a job must still be training when the
test acts on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from vision_trainer.api.app import create_app
from vision_trainer.services import jobs
from vision_trainer.services.context import Services

from ..conftest import REPO, Server, data_dir_files, image_bytes, make_settings, multipart, submit_job, wait_for_job

pytestmark = pytest.mark.slow

COLOURS = [(200, 30, 30), (30, 30, 200), (30, 180, 30)]


class Worker:
    """`vision-trainer worker --concurrency 1` in its own process group, as on another machine."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vision_trainer.cli", "worker", "--concurrency", "1"],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the whole worker, as when its machine dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self.log.close()


class Cluster:
    """An API with VT_JOB_BACKEND=celery and workers sharing one PostgreSQL database and data dir."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.data_dir = tmp_path / "data"
        self.api = Server(self.data_dir, tmp_path / "api.log", **env)
        self.client = self.api.client
        self.workers: list[Worker] = []

    def start_workers(self, count: int) -> list[Worker]:
        env = {**os.environ, "VT_DATA_DIR": str(self.data_dir), "VT_LOG_LEVEL": "info", **self.env}
        started = [Worker(env, self.tmp_path / f"worker{len(self.workers) + i}.log") for i in range(count)]
        self.workers += started
        for worker in started:
            worker.wait_ready()
        return started

    def worker_holding(self, job: dict) -> Worker:
        pid = int(job["worker"].split("#")[0].rsplit(":", 1)[1])
        return next(w for w in self.workers if w.process.pid == pid)

    def submit(
        self, *, per_class: int = 6, size: int = 64, views: int = 0, epochs: int = 1, first_seed: int = 0
    ) -> str:
        """A red-vs-blue job; jobs with other ``first_seed`` get photos of their own (nothing in the feature cache)."""
        seeds = range(first_seed, first_seed + per_class)
        classes = {
            name: [(f"{i}.png", image_bytes(color, size=size, noise=20, seed=i), "image/png") for i in seeds]
            for name, color in zip(("red", "blue"), COLOURS)
        }
        data, files = multipart(classes, epochs=epochs, augment_views=views)
        response = self.client.post("/train", data=data, files=files)
        assert response.status_code == 202, response.text
        return response.json()["job_id"]

    def model_dirs(self) -> list[str]:
        return sorted(p.name for p in (self.data_dir / "models").iterdir())

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.api.kill()


@pytest.fixture
def cluster(tmp_path, redis_server, postgres_url) -> Iterator[Cluster]:
    redis_server.flush()
    env = {
        "VT_JOB_BACKEND": "celery",
        "VT_BROKER_URL": redis_server.url,
        "VT_DATABASE_URL": postgres_url,
        "VT_AUGMENT_VIEWS": "0",
        "VT_HEARTBEAT_INTERVAL_S": "0.5",
        "VT_HEARTBEAT_TIMEOUT_S": "5",
        "VT_SWEEP_INTERVAL_S": "1",
    }
    started = Cluster(tmp_path, env)
    yield started
    started.stop()


def sse_events(client: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    events, kind = [], None
    with client.stream("GET", f"/jobs/{job_id}/events", timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind:
                events.append((kind, json.loads(line.split(":", 1)[1])))
                if kind == "status":
                    break
    return events


def assert_each_job_succeeded_once(cluster: Cluster, job_ids: list[str]) -> list[dict]:
    jobs = [wait_for_job(cluster.client, job_id, timeout=300) for job_id in job_ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * len(jobs), [job["error"] for job in jobs]
    models = cluster.client.get("/models", params={"limit": 100}).json()["items"]
    assert sorted(m["job_id"] for m in models) == sorted(job_ids)  # one model per job, no more
    assert cluster.model_dirs() == sorted(job["model_id"] for job in jobs)
    for job in jobs:  # every start is a claim that either died, was stopped gracefully, or finished
        runs = sum(line.startswith("Split:") for line in job["log"])
        assert runs == job["attempts"] + sum(line.startswith("Interrupted:") for line in job["log"])
    return jobs


def test_two_workers_run_six_jobs_each_exactly_once_and_stream_progress(cluster) -> None:
    cluster.start_workers(2)
    job_ids = [cluster.submit(first_seed=100 * n) for n in range(6)]
    events = sse_events(cluster.client, job_ids[-1])
    jobs = assert_each_job_succeeded_once(cluster, job_ids)
    assert all(job["attempts"] == 1 for job in jobs)
    workers = {job["worker"].split("#")[0] for job in jobs}
    assert workers == {f"{os.uname().nodename}:{w.process.pid}" for w in cluster.workers}  # both worked
    kinds = [kind for kind, _ in events]
    assert "progress" in kinds and "log" in kinds and kinds[-1] == "status"
    assert events[-1][1]["status"] == "succeeded" and events[-1][1]["model_id"] == jobs[-1]["model_id"]
    assert any(data.get("phase") == "extracting" for kind, data in events if kind == "progress")
    predicted = cluster.client.post(
        "/predict", files={"file": ("x.png", image_bytes(COLOURS[0], size=64, noise=20, seed=999), "image/png")}
    )
    # The newest model answers (its accuracy is judged on real photos elsewhere: this one took one step).
    answer = predicted.json()
    assert predicted.status_code == 200 and answer["model_id"] == jobs[-1]["model_id"]
    assert answer["prediction"] in ("red", "blue")
    metrics = cluster.client.get("/metrics").text
    assert 'vision_trainer_jobs{status="succeeded"} 6.0' in metrics
    assert "vision_trainer_training_duration_seconds_count 6.0" in metrics


def test_a_worker_killed_mid_job_loses_nothing(cluster, capsys) -> None:
    first, _ = cluster.start_workers(2)
    long_job = cluster.submit(per_class=40, size=160, views=4, epochs=3)
    job = wait_for_job(
        cluster.client,
        long_job,
        timeout=120,
        until=lambda j: j["progress"]["phase"] == "extracting" and j["progress"]["done"] > 0,
    )
    short_jobs = [cluster.submit() for _ in range(2)]
    assert 0 < job["progress"]["done"] < job["progress"]["total"]
    victim = cluster.worker_holding(job)
    killed_at = time.monotonic()
    victim.kill()
    requeued = wait_for_job(cluster.client, long_job, timeout=60, until=lambda j: j["attempts"] == 2)
    requeued_after = time.monotonic() - killed_at
    jobs = assert_each_job_succeeded_once(cluster, [long_job, *short_jobs])
    finished_after = time.monotonic() - killed_at
    long = jobs[0]
    assert long["attempts"] == 2 and not long["worker"].startswith(f"{os.uname().nodename}:{victim.process.pid}#")
    assert any(line.startswith("Re-queued: worker") and "sent no heartbeat" in line for line in long["log"])
    assert all(job["attempts"] == 1 for job in jobs[1:])
    metrics = cluster.client.get("/metrics").text
    assert 'vision_trainer_jobs{status="succeeded"} 3.0' in metrics
    with capsys.disabled():  # the numbers behind the README's "Scaling out" claims
        print(
            f"\nkilled at done={job['progress']['done']}/{job['progress']['total']}; claimed again "
            f"{requeued_after:.1f} s later by {requeued['worker']}; succeeded {finished_after:.1f} s after the kill"
        )
        print(
            "\n".join(
                line for line in metrics.splitlines() if line.startswith("vision_trainer_") and "_bucket" not in line
            )
        )


def test_cancel_reaches_a_job_on_a_remote_worker(cluster) -> None:
    cluster.start_workers(1)
    job_id = cluster.submit(per_class=40, size=160, views=4, epochs=3)
    wait_for_job(cluster.client, job_id, timeout=120, until=lambda j: j["progress"]["done"] > 0)
    response = cluster.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202
    job = wait_for_job(cluster.client, job_id, timeout=60)
    assert job["status"] == "cancelled" and job["model_id"] is None
    assert cluster.model_dirs() == []
    assert cluster.client.get("/models").json()["count"] == 0


def test_worker_refuses_to_start_without_broker_database_or_data_dir(tmp_path, redis_server, postgres_url) -> None:
    data_dir = tmp_path / "data"
    base = {
        **os.environ,
        "VT_DATA_DIR": str(data_dir),
        "VT_BROKER_URL": redis_server.url,
        "VT_DATABASE_URL": postgres_url,
    }

    def refusal(**env: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "vision_trainer.cli", "worker"],
            cwd=REPO,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        return result.stderr

    assert "does not exist here" in refusal()
    data_dir.mkdir()
    assert "cannot reach the broker" in refusal(VT_BROKER_URL="redis://127.0.0.1:1/0")
    assert "cannot use the database" in refusal(VT_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    # A job waits in the database, but its images are in another data dir than this worker's.
    api_side = Services.create(make_settings(tmp_path / "shared", database_url=postgres_url))
    try:
        job_id = submit_job(api_side)
        dataset_id = jobs.get_job(api_side, job_id)["dataset_id"]
    finally:
        api_side.close()
    assert f"datasets/{dataset_id}): this is not the API's data dir" in refusal()


def test_a_worker_stopped_gracefully_hands_its_job_back(cluster) -> None:
    (first,) = cluster.start_workers(1)
    job_id = cluster.submit(per_class=40, size=160, views=4, epochs=3)
    wait_for_job(cluster.client, job_id, timeout=120, until=lambda j: j["progress"]["done"] > 0)
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(60) == 0
    job = cluster.client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["attempts"] == 0  # a graceful stop uses up no attempt
    assert "Interrupted: the server is stopping; the job will run again" in job["log"]
    cluster.start_workers(1)
    jobs = assert_each_job_succeeded_once(cluster, [job_id])
    assert jobs[0]["attempts"] == 1


def test_unreachable_broker_answers_503_and_keeps_nothing(tmp_path, colour_images) -> None:
    settings = make_settings(tmp_path / "data", job_backend="celery", broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        data, files = multipart({"red": colour_images(COLOURS[0], 4), "blue": colour_images(COLOURS[1], 4)})
        response = client.post("/train", data=data, files=files)
        assert response.status_code == 503 and response.json()["code"] == "queue_unavailable"
        assert "retry" in response.json()["detail"]
        assert client.get("/jobs").json()["count"] == 0
    assert data_dir_files(settings.data_dir) == []


def test_a_restarted_api_leaves_jobs_that_live_workers_train_alone(cluster) -> None:
    cluster.start_workers(1)
    job_id = cluster.submit(per_class=60, size=224, views=8, epochs=3)
    running = wait_for_job(cluster.client, job_id, timeout=120, until=lambda j: j["progress"]["done"] > 0)
    cluster.api.kill()
    cluster.api = Server(cluster.data_dir, cluster.tmp_path / "api2.log", **cluster.env)
    cluster.client = cluster.api.client
    assert cluster.client.get(f"/jobs/{job_id}").json()["status"] == "running"  # the restart came mid-job
    jobs = assert_each_job_succeeded_once(cluster, [job_id])
    assert jobs[0]["attempts"] == 1 and jobs[0]["worker"] == running["worker"]
    assert not any(line.startswith("Re-queued") for line in jobs[0]["log"])

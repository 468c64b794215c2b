"""Two servers on one data dir (`make run` and `uvicorn main:app --reload` side by side): the second
leaves the job the first is training alone, and takes over a job whose server died."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Server, data_dir_files, image_bytes, multipart, wait_for_job

pytestmark = pytest.mark.slow

ENV = {"VT_SWEEP_INTERVAL_S": "1", "VT_HEARTBEAT_INTERVAL_S": "0.5", "VT_HEARTBEAT_TIMEOUT_S": "60"}


def submit_long_job(server: Server, first_seed: int = 0) -> str:
    """Synthetic red vs blue, sized to keep training for a while on 2 cores; photos of its own for each
    ``first_seed``, so nothing comes from the feature cache."""
    classes = {
        name: [
            (f"{i}.png", image_bytes(color, size=224, noise=20, seed=i), "image/png")
            for i in range(first_seed, first_seed + 60)
        ]
        for name, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200)))
    }
    data, files = multipart(classes, epochs=3, augment_views=8, backbone="efficientnet_lite0")
    response = server.client.post("/train", data=data, files=files)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def training(job: dict) -> bool:
    return job["status"] == "running" and job["progress"]["done"] > 0


def models_on_disk(data_dir: Path) -> set[str]:
    return {f.split("/")[1] for f in data_dir_files(data_dir) if f.startswith("models/")}


def test_a_second_server_leaves_a_live_job_alone_and_takes_over_a_dead_ones(tmp_path: Path, servers) -> None:
    data_dir = tmp_path / "data"
    first = Server(data_dir, tmp_path / "first.log", **ENV)
    servers.append(first)
    live_job = submit_long_job(first)
    running = wait_for_job(first.client, live_job, timeout=180, until=training)

    second = Server(data_dir, tmp_path / "second.log", **ENV)  # its start-up recovery runs now
    servers.append(second)
    assert second.client.get(f"/jobs/{live_job}").json()["status"] == "running"  # the start came mid-job
    job = wait_for_job(second.client, live_job, timeout=300)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1 and job["worker"] == running["worker"]  # trained once, by the first server
    assert not any(line.startswith("Re-queued") for line in job["log"])
    assert sum(line.startswith("Split:") for line in job["log"]) == 1
    assert models_on_disk(data_dir) == {job["model_id"]}

    # The first server dies mid-job; the second one's periodic sweep sees its process is gone.
    orphan = submit_long_job(first, first_seed=1000)
    held = wait_for_job(first.client, orphan, timeout=180, until=training)
    assert held["worker"].startswith(f"{os.uname().nodename}:{first.process.pid}#")
    first.kill()
    job = wait_for_job(second.client, orphan, timeout=300)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2 and job["worker"].startswith(f"{os.uname().nodename}:{second.process.pid}#")
    assert any(line.startswith("Re-queued: the server stopped while this job ran") for line in job["log"])
    models = second.client.get("/models").json()
    assert sorted(m["job_id"] for m in models["items"]) == sorted([live_job, orphan])
    assert len(models_on_disk(data_dir)) == 2

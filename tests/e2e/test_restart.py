"""A server killed with SIGKILL mid-job: after a restart the job runs again and succeeds,
and models trained before still answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Server, data_dir_files, photo_files, photos, wait_for_job

pytestmark = pytest.mark.slow


def test_job_killed_mid_training_runs_again_after_restart(tmp_path: Path, servers: list[Server]) -> None:
    data_dir = tmp_path / "data"
    first = Server(data_dir, tmp_path / "server.log")
    servers.append(first)
    small = {
        "label1": "cat",
        "label2": "dog",
        "epochs": "2",
        "augment_views": "0",
        "wait": "true",
        "backbone": "efficientnet_lite0",
    }
    small_files = [("files1", f) for f in photo_files(photos("cats_dogs", "train", "cats", count=5))]
    small_files += [("files2", f) for f in photo_files(photos("cats_dogs", "train", "dogs", count=5))]
    before = first.client.post("/train", data=small, files=small_files).json()
    assert before["status"] == "succeeded", before

    long_files = [("files1", f) for f in photo_files(photos("cats_dogs", "train", "cats", count=60))]
    long_files += [("files2", f) for f in photo_files(photos("cats_dogs", "train", "dogs", count=60))]
    data = {"label1": "cat", "label2": "dog", "epochs": "3", "augment_views": "3", "backbone": "efficientnet_lite0"}
    job_id = first.client.post("/train", data=data, files=long_files).json()["job_id"]
    mid = wait_for_job(
        first.client,
        job_id,
        timeout=120,
        until=lambda j: j["progress"]["phase"] == "extracting" and j["progress"]["done"] > 0,
    )
    # The server keeps answering while the job trains.
    val = photo_files(photos("cats_dogs", "val", "cats", count=1))[0]
    assert first.client.get("/").status_code == 200
    during = first.client.post("/predict", data={"model_id": before["model_id"]}, files={"file": val})
    assert during.status_code == 200 and during.json()["model_id"] == before["model_id"]
    first.kill()
    assert 0 < mid["progress"]["done"] < mid["progress"]["total"], mid

    second = Server(data_dir, tmp_path / "server.log")
    servers.append(second)
    job = wait_for_job(second.client, job_id, timeout=300)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert any("Re-queued" in line for line in job["log"])
    assert sum(line.startswith("Epoch 3/3") for line in job["log"]) == 1

    models = second.client.get("/models").json()
    assert models["count"] == 2
    assert len([f for f in data_dir_files(data_dir) if f.startswith("models/")]) == 2
    old = second.client.post("/predict", data={"model_id": before["model_id"]}, files={"file": val})
    assert old.status_code == 200  # the model trained before the kill answers exactly as it did
    assert (old.json()["prediction"], old.json()["confidence"]) == (
        during.json()["prediction"],
        during.json()["confidence"],
    )
    new = second.client.post("/predict", files={"file": val}).json()
    assert new["model_id"] == job["model_id"]

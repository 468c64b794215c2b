"""A server killed with SIGKILL mid-job: after a restart the job runs again and succeeds,
and models trained before still answer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import data_dir_files, photo_files, photos, wait_for_job

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`vision-trainer serve` in a child process, as `make run` starts it."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "VT_DATA_DIR": str(data_dir), "VT_PORT": str(self.port), "VT_LOG_LEVEL": "warning"}
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vision_trainer.cli", "serve"], cwd=REPO, env=env,
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        deadline = time.monotonic() + 90
        while True:
            try:
                if self.client.get("/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start; see {log}")
            time.sleep(0.3)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.client.close()
        self.log.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.kill()


def test_job_killed_mid_training_runs_again_after_restart(tmp_path: Path, servers: list[Server]) -> None:
    data_dir = tmp_path / "data"
    first = Server(data_dir, tmp_path / "server.log")
    servers.append(first)
    small = {"label1": "cat", "label2": "dog", "epochs": "2", "augment_views": "0", "wait": "true",
             "backbone": "efficientnet_lite0"}
    small_files = [("files1", f) for f in photo_files(photos("cats_dogs", "train", "cats", count=5))]
    small_files += [("files2", f) for f in photo_files(photos("cats_dogs", "train", "dogs", count=5))]
    before = first.client.post("/train", data=small, files=small_files).json()
    assert before["status"] == "succeeded", before

    long_files = [("files1", f) for f in photo_files(photos("cats_dogs", "train", "cats", count=60))]
    long_files += [("files2", f) for f in photo_files(photos("cats_dogs", "train", "dogs", count=60))]
    data = {"label1": "cat", "label2": "dog", "epochs": "3", "augment_views": "3", "backbone": "efficientnet_lite0"}
    job_id = first.client.post("/train", data=data, files=long_files).json()["job_id"]
    mid = wait_for_job(first.client, job_id, timeout=120,
                       until=lambda j: j["progress"]["phase"] == "extracting" and j["progress"]["done"] > 0)
    # The server keeps answering while the job trains.
    val = photo_files(photos("cats_dogs", "val", "cats", count=1))[0]
    assert first.client.get("/").status_code == 200
    during = first.client.post("/predict", data={"model_id": before["model_id"]}, files={"file": val})
    assert during.status_code == 200 and during.json()["prediction"] in ("cat", "dog")
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
    assert old.status_code == 200 and old.json()["prediction"] in ("cat", "dog")
    new = second.client.post("/predict", files={"file": val}).json()
    assert new["model_id"] == job["model_id"]

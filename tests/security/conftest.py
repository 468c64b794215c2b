"""A real server process for the hostile-input tests, started as `vision-trainer serve` runs it
(``vision_trainer.api.server``), with short timeouts so slow-client attacks end within seconds."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from ..conftest import REPO, image_bytes
from ..servers import free_port, http_client, wait_until_ready

FAST_LIMITS = {
    "VT_HEADER_TIMEOUT_S": "2",
    "VT_BODY_TIMEOUT_S": "2",
    "VT_MIN_UPLOAD_RATE_KB": "4",
    "VT_LOG_LEVEL": "warning",
}


class LiveServer:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("ab")
        full_env = {**os.environ, "VT_DATA_DIR": str(data_dir), "VT_PORT": str(self.port), **FAST_LIMITS, **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vision_trainer.api.server"],
            cwd=REPO,
            env=full_env,
            stdout=self.log,
            stderr=self.log,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = http_client(self.url, timeout=60)
        wait_until_ready(self.client, self.process, lambda: self.log_path.read_text(errors="replace")[-2000:])

    def rss_peak_mib(self) -> float:
        """The server process's peak resident memory so far (VmHWM), from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def assert_healthy(self) -> None:
        assert self.process.poll() is None, "the server died"
        started = time.monotonic()
        assert self.client.get("/health/live").status_code == 200
        assert time.monotonic() - started < 5

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One SQLite server for a test module (tests clean up what they create)."""
    live = LiveServer(tmp_path_factory.mktemp("hostile") / "data", TORCH_HOME=str(tmp_path_factory.mktemp("th")))
    yield live
    live.stop()


def resnet18_checkpoint(**extra: object) -> bytes:
    """A seed-format checkpoint of a 2-class ResNet-18 (random weights: no download needed)."""
    model = torchvision.models.resnet18(num_classes=2)
    buffer = io.BytesIO()
    torch.save({"model_state_dict": model.state_dict(), "class_names": ["cat", "dog"], **extra}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_id(server: LiveServer) -> str:
    response = server.client.post(
        "/models/import", files={"file": ("m.pth", resnet18_checkpoint(), "application/octet-stream")}
    )
    assert response.status_code in (200, 201), response.text
    # The first prediction loads the model (and its runtime): memory the attacks below must not be charged.
    photo = {"file": ("warm.png", image_bytes((100, 100, 100), size=300), "image/png")}
    assert server.client.post("/predict", files=photo).status_code == 200
    return response.json()["model_id"]

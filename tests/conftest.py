"""Shared fixtures: settings on a temporary data dir, a live app client, image factories, datasets."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vision_trainer.api.app import create_app
from vision_trainer.settings import Settings

from .servers import PostgresServer, RedisServer, free_port, http_client, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
# The tests must not depend on this machine's network: no weights download unless a test asks for one
# (tests/ml/test_weights_download.py serves them from a local server). Subprocesses inherit it.
os.environ.setdefault("VT_DOWNLOAD_WEIGHTS", "false")
DATASETS = Path(os.environ.get("VT_TEST_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
FINAL = ("succeeded", "failed", "cancelled")


def dataset_dir(*parts: str) -> Path:
    """A folder of ../shared/datasets (or $VT_TEST_DATASETS). Missing, the test is skipped, except
    under CI=true, where it fails: CI has the datasets and must run these tests."""
    path = DATASETS.joinpath(*parts)
    if not path.is_dir():
        reason = f"real photo dataset {path} is not available (set VT_TEST_DATASETS to the datasets folder)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI must run these tests")
        pytest.skip(reason)
    return path


def photos(*parts: str, start: int = 0, count: int) -> list[Path]:
    files = sorted(p for p in dataset_dir(*parts).iterdir() if p.is_file())
    return files[start : start + count]


@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test depends on whatever the machine's own torch hub cache holds."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, **overrides)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", augment_views=0)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole run; tests get databases of their own."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (plain postgresql:// URL)."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def image_bytes(
    color: tuple[int, int, int], *, size: int = 64, fmt: str = "PNG", noise: int = 0, seed: int = 0
) -> bytes:
    """A solid-colour image, optionally with noise so that every call can give distinct content."""
    array = np.full((size, size, 3), color, dtype=np.int16)
    if noise:
        array += np.random.default_rng(seed).integers(-noise, noise + 1, array.shape, dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


ImageFactory = Callable[..., list[tuple[str, bytes, str]]]


@pytest.fixture
def colour_images() -> ImageFactory:
    """``colour_images(color, n)`` -> multipart file tuples of ``n`` distinct noisy images."""

    def make(color: tuple[int, int, int], n: int, *, size: int = 64) -> list[tuple[str, bytes, str]]:
        return [(f"img{i}.png", image_bytes(color, size=size, noise=20, seed=i), "image/png") for i in range(n)]

    return make


def multipart(classes: dict[str, list[tuple[str, bytes, str]]], **fields: Any) -> tuple[dict, list]:
    """(data, files) for ``POST /train`` with label1..N / files1..N in the dict's order."""
    data = {k: str(v) for k, v in fields.items()}
    files = []
    for n, (label, images) in enumerate(classes.items(), start=1):
        data[f"label{n}"] = label
        files += [(f"files{n}", image) for image in images]
    return data, files


def photo_files(paths: list[Path]) -> list[tuple[str, bytes, str]]:
    return [(p.name, p.read_bytes(), "image/jpeg") for p in paths]


def wait_for_job(
    client: Any, job_id: str, *, timeout: float = 300, until: Callable[[dict], bool] | None = None
) -> dict:
    """Poll ``GET /jobs/{id}`` until it ends (or ``until(job)`` holds)."""
    until = until or (lambda job: job["status"] in FINAL)
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not reach the expected state in {timeout}s: {job}")
        time.sleep(0.2)


def submit_job(services: Any, *, per_class: int = 6, size: int = 64, views: int = 0) -> str:
    """A queued red-vs-blue job submitted through the services, as the API would; its id."""
    from vision_trainer.jobs.inline import CallerRunsQueue
    from vision_trainer.services import training
    from vision_trainer.services.uploads import Upload

    uploads = [
        [Upload(f"{i}.png", io.BytesIO(image_bytes(color, size=size, noise=20, seed=i))) for i in range(per_class)]
        for color in ((200, 30, 30), (30, 30, 200))
    ]
    options = training.TrainRequest(epochs=1, augment_views=views)
    request = training.TrainingUpload(labels=["red", "blue"], files=uploads, options=options)
    return training.submit_training(services, CallerRunsQueue(), request)["job_id"]


def data_dir_files(root: Path) -> list[str]:
    """Every file under the data dir except the database's own."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("vision_trainer.db")
    )


class Server:
    """`vision-trainer serve` in a child process, as `make run` starts it."""

    def __init__(self, data_dir: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        full_env = {
            **os.environ,
            "VT_DATA_DIR": str(data_dir),
            "VT_PORT": str(self.port),
            "VT_LOG_LEVEL": "warning",
            **env,
        }
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vision_trainer.cli", "serve"],
            cwd=REPO,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.client = http_client(f"http://127.0.0.1:{self.port}", timeout=120)
        wait_until_ready(self.client, self.process, lambda: f"see {log}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.client.close()
        self.log.close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; any still running are killed at the end."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.kill()

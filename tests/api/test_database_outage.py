"""PostgreSQL stopped under a running API: every endpoint that needs it answers 503 `database_unavailable`
with Retry-After (never 500), the others keep answering, and all recovers by itself once it is back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import data_dir_files, image_bytes, make_settings, multipart
from tests.servers import PostgresServer
from vision_trainer.api.app import create_app

pytestmark = pytest.mark.slow

RED, BLUE = (200, 30, 30), (30, 30, 200)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own: stopping it disturbs no other test."""
    server = PostgresServer()
    yield server
    server.stop()


def _png(color: tuple[int, int, int], seed: int = 99) -> tuple[str, bytes, str]:
    return ("x.png", image_bytes(color, noise=20, seed=seed), "image/png")


def _requests(client: TestClient, job_id: str, model_id: str) -> dict[str, Callable[[], object]]:
    classes = {"red": [_png(RED, i) for i in range(3)], "blue": [_png(BLUE, i) for i in range(3)]}
    data, files = multipart(classes, epochs=1)
    return {
        "GET /jobs": lambda: client.get("/jobs"),
        "GET /jobs/{id}": lambda: client.get(f"/jobs/{job_id}"),
        "GET /jobs/{id}/events": lambda: client.get(f"/jobs/{job_id}/events"),
        "POST /jobs/{id}/cancel": lambda: client.post(f"/jobs/{job_id}/cancel"),
        "DELETE /jobs/{id}": lambda: client.delete(f"/jobs/{job_id}"),
        "POST /train": lambda: client.post("/train", data=data, files=files),
        "GET /models": lambda: client.get("/models"),
        "GET /models/{id}": lambda: client.get(f"/models/{model_id}"),
        "PATCH /models/{id}": lambda: client.patch(f"/models/{model_id}", json={"name": "renamed"}),
        "GET /models/default": lambda: client.get("/models/default"),
        "PUT /models/default": lambda: client.put("/models/default", json={"model_id": model_id}),
        "GET /models/{id}/checkpoint": lambda: client.get(f"/models/{model_id}/checkpoint"),
        "POST /predict": lambda: client.post("/predict", files={"file": _png(RED)}),
        "POST /predict/batch": lambda: client.post("/predict/batch", files=[("files", _png(RED))]),
        "GET /metrics": lambda: client.get("/metrics"),
    }


def test_every_endpoint_needing_the_database_answers_503_until_it_is_back(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    settings = make_settings(tmp_path / "data", augment_views=0, database_url=own_postgres.create_database())
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        classes = {"red": [_png(RED, i) for i in range(4)], "blue": [_png(BLUE, i) for i in range(4)]}
        data, files = multipart(classes, epochs=1, wait="true", backbone="efficientnet_lite0")
        job = client.post("/train", data=data, files=files).json()
        assert job["status"] == "succeeded", job
        before = data_dir_files(settings.data_dir)

        own_postgres.halt()
        seen = {}
        for name, call in _requests(client, job["job_id"], job["model_id"]).items():
            response = call()
            seen[name] = response.status_code
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert response.json()["code"] == "database_unavailable", (name, response.text)
            assert response.headers["Retry-After"].isdigit(), name
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["code"] == "not_ready" and "Retry-After" in ready.headers
        assert client.get("/health/live").status_code == 200
        assert client.get("/").status_code == 200
        assert data_dir_files(settings.data_dir) == before  # the refused upload left nothing

        own_postgres.start()  # nothing restarted on the API's side: its pool reconnects by itself
        assert client.get("/health/ready").status_code == 200
        back = client.get(f"/jobs/{job['job_id']}")
        assert back.status_code == 200 and back.json()["status"] == "succeeded"
        predicted = client.post("/predict", files={"file": _png(RED)})
        assert predicted.status_code == 200 and predicted.json()["prediction"] == "red"
        assert client.get("/models").json()["count"] == 1
    print(f"\nstatus codes while PostgreSQL was down: {sorted(set(seen.values()))} from {len(seen)} endpoints")

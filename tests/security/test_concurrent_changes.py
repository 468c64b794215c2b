"""Concurrent changes of one dataset through a real server, on SQLite and on PostgreSQL: every change
gets its own version, and the class list always matches the photos."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ..conftest import image_bytes
from .conftest import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path) -> LiveServer:
    env = {} if request.param == "sqlite" else {"VT_DATABASE_URL": request.getfixturevalue("postgres_url")}
    server = LiveServer(tmp_path / "data", **env)
    request.addfinalizer(server.stop)
    return server


def test_concurrent_adds_relabels_and_deletes_get_distinct_versions(live: LiveServer) -> None:
    client = live.client
    dataset_id = client.post("/datasets", json={"name": "race"}).json()["dataset_id"]
    photos = [("files", (f"{i}.png", image_bytes((200, 30, 30), noise=20, seed=i))) for i in range(12)]
    first = client.post(f"/datasets/{dataset_id}/images", data={"label": "a"}, files=photos).json()
    start, ids = first["version"], [entry["image_id"] for entry in first["added"]]

    def change(n: int) -> int:
        with httpx.Client(base_url=live.url, timeout=120) as own:
            if n < 4:
                photo = [("files", (f"new{n}.png", image_bytes((30, 30, 200), noise=20, seed=100 + n)))]
                response = own.post(f"/datasets/{dataset_id}/images", data={"label": f"b{n}"}, files=photo)
            elif n < 8:
                response = own.patch(f"/datasets/{dataset_id}/images", json={"image_ids": [ids[n]], "label": f"c{n}"})
            else:
                response = own.request("DELETE", f"/datasets/{dataset_id}/images", json={"image_ids": [ids[n]]})
            assert response.status_code == 200, response.text
            return response.json()["version"]

    with ThreadPoolExecutor(11) as pool:
        versions = list(pool.map(change, range(11)))
    assert sorted(versions) == list(range(start + 1, start + 12))
    dataset = client.get(f"/datasets/{dataset_id}").json()
    images = client.get(f"/datasets/{dataset_id}/images", params={"limit": 100}).json()["items"]
    assert dataset["version"] == start + 11
    assert sorted(dataset["class_names"]) == sorted({image["label"] for image in images})
    assert dataset["image_count"] == 12 + 4 - 3


def test_a_training_racing_the_datasets_deletion_queues_on_it_or_gets_404(live: LiveServer) -> None:
    """Each round sends a training request and the dataset's deletion at once: either the job is queued
    on a dataset that still exists (and the delete is refused while the job waits, 409), or the dataset is
    gone first and the training gets 404. A job is never queued on a deleted dataset."""
    client = live.client
    outcomes = set()
    for round_ in range(6):
        dataset_id = client.post("/datasets", json={"name": f"race {round_}"}).json()["dataset_id"]
        for label, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
            photos = [("files", (f"{i}.png", image_bytes(colour, noise=20, seed=round_ * 10 + i))) for i in range(2)]
            assert client.post(f"/datasets/{dataset_id}/images", data={"label": label}, files=photos).status_code == 200

        def train(dataset_id: str = dataset_id) -> httpx.Response:
            with httpx.Client(base_url=live.url, timeout=120) as own:
                return own.post(f"/datasets/{dataset_id}/train", data={"epochs": "1", "augment_views": "0"})

        def delete(dataset_id: str = dataset_id) -> httpx.Response:
            with httpx.Client(base_url=live.url, timeout=120) as own:
                return own.delete(f"/datasets/{dataset_id}")

        with ThreadPoolExecutor(2) as pool:
            trained, deleted = pool.submit(train), pool.submit(delete)
            trained_status, deleted_status = trained.result().status_code, deleted.result().status_code
        outcomes.add((trained_status, deleted_status))
        assert (trained_status, deleted_status) in {(202, 409), (404, 204), (202, 204)}, trained.result().text
        if trained_status == 202:
            job = trained.result().json()
            if deleted_status == 204:  # the job ran to its end before the delete came: it holds no lock then
                assert client.get(f"/jobs/{job['job_id']}").json()["status"] in {"succeeded", "failed"}
            else:
                assert client.get(f"/datasets/{dataset_id}").status_code == 200
    jobs = client.get("/jobs", params={"limit": 100}).json()["items"]
    for job in jobs:
        if job["status"] in {"queued", "running"}:
            assert client.get(f"/datasets/{job['dataset_id']}").status_code == 200

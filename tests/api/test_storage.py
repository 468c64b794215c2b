"""GET /storage (and GET /'s `storage`), the VT_MAX_DATA_MB bound on new uploads, and deletes that free
every file of what they delete (on SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from vision_trainer.api.app import create_app
from vision_trainer.services import caches
from vision_trainer.services import datasets as dataset_service
from vision_trainer.services import storage as storage_service
from vision_trainer.services.errors import InsufficientStorage
from vision_trainer.services.uploads import Upload
from vision_trainer.settings import Settings
from vision_trainer.store import repository as repo

from ..conftest import image_bytes, multipart

PARTS = ("images_bytes", "models_bytes", "feature_cache_bytes", "backbones_bytes", "database_bytes", "other_bytes")
MiB = 2**20
HINT = "delete datasets, models or jobs, or raise the limit"


def usage(client: TestClient) -> dict:
    response = client.get("/storage")
    assert response.status_code == 200, response.text
    return response.json()


def pngs(color: tuple[int, int, int], n: int, *, size: int = 32, seed: int = 0) -> list[tuple[str, bytes, str]]:
    return [(f"{seed + i}.png", image_bytes(color, size=size, noise=20, seed=seed + i), "image/png") for i in range(n)]


def new_dataset(client: TestClient, name: str) -> str:
    response = client.post("/datasets", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()["dataset_id"]


def files_under(root: Path) -> dict[str, int]:
    """Every file of the data dir but the database's, with its size."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("vision_trainer.db")
    }


def naming(files: dict[str, int], resource_id: str) -> list[str]:
    return [path for path in files if resource_id in path]


@contextmanager
def limited(settings: Settings, max_data_mb: float) -> Iterator[TestClient]:
    """A second app on the same data dir and database, with VT_MAX_DATA_MB set."""
    with TestClient(create_app(settings.model_copy(update={"max_data_mb": max_data_mb}))) as test_client:
        yield test_client


def test_storage_counts_each_part_and_root_shows_the_same(client: TestClient, settings: Settings) -> None:
    empty = usage(client)
    assert set(empty) == {*PARTS, "total_bytes", "limit_bytes", "free_bytes"}
    assert empty["images_bytes"] == empty["models_bytes"] == empty["feature_cache_bytes"] == 0
    assert empty["database_bytes"] > 0 and empty["free_bytes"] > 0 and empty["limit_bytes"] is None
    assert empty["total_bytes"] == sum(empty[p] for p in PARTS)

    sent = pngs((200, 30, 30), 3) + pngs((30, 30, 200), 2, seed=10)
    dataset_id = new_dataset(client, "colours")
    response = client.post(f"/datasets/{dataset_id}/images", data={"label": "red"}, files=[("files", f) for f in sent])
    assert response.status_code == 200, response.text
    after = usage(client)  # right after the upload: not the cached answer from before it
    assert after["images_bytes"] == sum(len(content) for _, content, _ in sent)
    assert after["total_bytes"] == sum(after[p] for p in PARTS)

    root = client.get("/").json()["storage"]
    assert {k: v for k, v in root.items() if k not in ("free_bytes", "database_bytes", "total_bytes")} == {
        k: v for k, v in after.items() if k not in ("free_bytes", "database_bytes", "total_bytes")
    }


def test_storage_needs_the_api_key(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"api_keys": "secret"}))) as keyed:
        assert keyed.get("/storage").status_code == 401
        assert keyed.get("/storage", headers={"X-API-Key": "secret"}).status_code == 200
        assert keyed.get("/").json()["storage"]["total_bytes"] > 0


def refused(response, *, upload_named: bool) -> str:
    assert response.status_code == 507, response.text
    body = response.json()
    assert body["code"] == "storage_full" and "VT_MAX_DATA_MB" in body["detail"] and HINT in body["detail"]
    assert ("this upload is" in body["detail"]) == upload_named
    return body["detail"]


def test_uploads_are_refused_before_anything_is_stored_when_over_the_limit(
    client: TestClient, settings: Settings
) -> None:
    dataset_id = new_dataset(client, "kept")
    before = files_under(settings.data_dir)
    with limited(settings, 0.001) as small:  # 1 KiB: the database alone is over it
        detail = refused(
            small.post(
                f"/datasets/{dataset_id}/images",
                data={"label": "red"},
                files=[("files", f) for f in pngs((200, 30, 30), 2)],
            ),
            upload_named=False,
        )
        assert "MiB of 0.001 MiB" in detail
        data, files = multipart({"red": pngs((200, 30, 30), 2), "blue": pngs((30, 30, 200), 2)}, epochs=1)
        refused(small.post("/train", data=data, files=files), upload_named=False)
        refused(
            small.post("/models/import", files={"file": ("m.pth", b"x" * 2048, "application/octet-stream")}),
            upload_named=False,
        )
        assert small.get("/datasets").json()["count"] == 1  # /train made no dataset
        assert small.get("/models").json()["count"] == 0 and small.get("/jobs").json()["count"] == 0
        assert small.get(f"/datasets/{dataset_id}").json()["image_count"] == 0
        assert small.get("/storage").json()["limit_bytes"] == int(0.001 * MiB)
    assert files_under(settings.data_dir) == before


def test_an_upload_whose_declared_size_would_pass_the_limit_is_refused(client: TestClient, settings: Settings) -> None:
    dataset_id = new_dataset(client, "growing")
    headroom_mb = usage(client)["total_bytes"] / MiB + 0.5
    big = [("big.png", image_bytes((90, 90, 90), size=600, noise=120), "image/png")]  # ~1 MiB of noise
    assert len(big[0][1]) > 0.6 * MiB
    with limited(settings, headroom_mb) as bounded:
        refused(bounded.post(f"/datasets/{dataset_id}/images", files=[("files", f) for f in big]), upload_named=True)
        data, files = multipart({"red": big + pngs((200, 30, 30), 1), "blue": pngs((30, 30, 200), 2)}, epochs=1)
        refused(bounded.post("/train", data=data, files=files), upload_named=True)
        refused(
            bounded.post("/models/import", files={"file": ("m.pth", b"x" * MiB, "application/octet-stream")}),
            upload_named=True,
        )
        assert bounded.get(f"/datasets/{dataset_id}").json()["image_count"] == 0
        small = bounded.post(f"/datasets/{dataset_id}/images", files=[("files", f) for f in pngs((0, 90, 0), 2)])
        assert small.status_code == 200, small.text
        assert bounded.get("/datasets").json()["count"] == 1


def test_the_service_checks_the_limit_for_callers_without_http(client: TestClient, settings: Settings) -> None:
    """The command line calls the services directly: the uploads' own sizes count."""
    dataset_id = new_dataset(client, "cli")
    headroom_mb = usage(client)["total_bytes"] / MiB + 0.5
    with limited(settings, headroom_mb) as bounded:
        services = bounded.app.state.services
        big = Upload("big.png", io.BytesIO(image_bytes((90, 90, 90), size=600, noise=120)))
        request = dataset_service.AddImages(groups=[dataset_service.ImageGroup("grey", [big])])
        with pytest.raises(InsufficientStorage, match="this upload is .* MiB"):
            dataset_service.add_images(services, dataset_id, request)
        small = Upload("small.png", io.BytesIO(image_bytes((0, 90, 0), size=32)))
        added = dataset_service.add_images(
            services, dataset_id, dataset_service.AddImages(groups=[dataset_service.ImageGroup("green", [small])])
        )
        assert len(added["added"]) == 1


def test_deleting_a_model_a_job_and_a_dataset_frees_their_files(client: TestClient, settings: Settings) -> None:
    root = settings.data_dir.resolve()
    other_id = new_dataset(client, "bystander")
    assert (
        client.post(
            f"/datasets/{other_id}/images",
            data={"label": "green"},
            files=[("files", f) for f in pngs((30, 200, 30), 2, seed=50)],
        ).status_code
        == 200
    )
    data, files = multipart(
        {"red": pngs((200, 30, 30), 4), "blue": pngs((30, 30, 200), 4, seed=20)}, epochs=1, wait="true"
    )
    job = client.post("/train", data=data, files=files).json()
    assert job["status"] == "succeeded", job
    job_id, model_id, dataset_id = job["job_id"], job["model_id"], job["dataset_id"]

    # The model: its folder goes, nothing else changes.
    before, used = files_under(root), usage(client)
    model_files = naming(before, model_id)
    assert model_files and all(path.startswith(f"models/{model_id}/") for path in model_files)
    assert client.delete(f"/models/{model_id}").status_code == 204
    after, now = files_under(root), usage(client)
    assert naming(after, model_id) == [] and not (root / "models" / model_id).exists()
    assert after == {k: v for k, v in before.items() if k not in model_files}
    assert used["models_bytes"] - now["models_bytes"] == sum(before[p] for p in model_files) > 0
    assert now["images_bytes"] == used["images_bytes"]

    # The job (made by /train): its rows go; its photos are its dataset's, which stays.
    assert client.delete(f"/jobs/{job_id}").status_code == 204
    assert naming(files_under(root), job_id) == [] and files_under(root) == after
    assert client.get(f"/jobs/{job_id}").status_code == 404

    # The dataset: its photos go, the other dataset's stay.
    before, used = files_under(root), usage(client)
    photos = naming(before, dataset_id)
    assert len(photos) == 8 and all(path.startswith(f"datasets/{dataset_id}/") for path in photos)
    assert client.delete(f"/datasets/{dataset_id}").status_code == 204
    after, now = files_under(root), usage(client)
    assert naming(after, dataset_id) == [] and not (root / "datasets" / dataset_id).exists()
    assert after == {k: v for k, v in before.items() if k not in photos}
    assert len(naming(after, other_id)) == 2
    freed = sum(before[p] for p in photos)
    assert used["images_bytes"] - now["images_bytes"] == freed > 0
    # The database's files may grow by a delete (SQLite's write-ahead log); everything else shrank by the photos.
    assert (used["total_bytes"] - used["database_bytes"]) - (now["total_bytes"] - now["database_bytes"]) == freed


def test_deleting_a_v1_job_frees_its_uploads(client: TestClient, settings: Settings) -> None:
    """Jobs from before datasets kept their uploads under jobs/<job_id>/."""
    services = client.app.state.services
    job_id, keep_id = uuid.uuid4().hex, uuid.uuid4().hex
    for some_id in (job_id, keep_id):
        folder = services.files.job_dir(some_id)
        folder.mkdir(parents=True)
        for i, (_, content, _) in enumerate(pngs((200, 30, 30), 3, seed=30)):
            (folder / f"{i:032x}.img").write_bytes(content)
        with services.db.session() as session:
            repo.create_job(
                session,
                job_id=some_id,
                params={"epochs": 1},
                class_names=["red", "blue"],
                inputs=[{"file": f"{i:032x}.img", "label": "red"} for i in range(3)],
            )
            assert repo.set_job_status(
                session, job_id=some_id, expected=["queued"], status="failed", finished_at=repo.now(), phase="done"
            )
    root = settings.data_dir.resolve()
    before, used = files_under(root), usage(client)
    uploads = naming(before, job_id)
    assert len(uploads) == 3 and used["images_bytes"] == sum(before[p] for p in [*uploads, *naming(before, keep_id)])
    assert client.delete(f"/jobs/{job_id}").status_code == 204
    after, now = files_under(root), usage(client)
    assert naming(after, job_id) == [] and not (root / "jobs" / job_id).exists()
    assert after == {k: v for k, v in before.items() if k not in uploads}
    assert used["images_bytes"] - now["images_bytes"] == sum(before[p] for p in uploads)


def test_root_answers_without_storage_while_the_database_is_unreachable(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(db: object) -> int:
        raise OperationalError("SELECT pg_database_size(...)", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(storage_service, "database_bytes", unreachable)
    client.app.state.services.usage.forget()
    root = client.get("/")
    assert root.status_code == 200 and root.json()["storage"] is None
    response = client.get("/storage")
    assert response.status_code == 503 and response.json()["code"] == "database_unavailable"


def test_a_stale_measurement_is_answered_while_a_new_one_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET / and GET /storage never wait for a directory walk once one was made, except right after a
    change (forget), so that the figures then include it."""
    import threading
    import time

    monkeypatch.setattr(caches, "CACHE_S", 0.0)
    cache = caches.UsageCache()
    walking, release = threading.Event(), threading.Event()
    walks: list[int] = []

    def measure() -> dict:
        walks.append(len(walks) + 1)
        if len(walks) > 1:
            walking.set()
            assert release.wait(10)
        return {"total_bytes": len(walks)}

    assert cache.last(measure) is None and walks == []  # GET / measures in a thread then
    assert cache.get(measure) == {"total_bytes": 1}  # the first read measures
    time.sleep(0.01)
    assert cache.get(measure) == {"total_bytes": 1}  # stale: answered at once, a walk starts
    assert walking.wait(10)
    assert cache.get(measure) == {"total_bytes": 1}  # still walking: no second walk, no waiting
    assert cache.last(measure) == {"total_bytes": 1}
    release.set()
    deadline = time.monotonic() + 10
    while cache.get(lambda: {"total_bytes": -1})["total_bytes"] != 2:
        assert time.monotonic() < deadline, "the new measurement never arrived"
        time.sleep(0.01)
    cache.forget()
    assert cache.get(lambda: {"total_bytes": 99}) == {"total_bytes": 99}  # after a change: measured now


def test_an_upload_is_checked_against_fresh_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET / may answer figures a few seconds old; the VT_MAX_DATA_MB check before an upload may not."""
    import time

    monkeypatch.setattr(caches, "CACHE_S", 0.05)
    cache = caches.UsageCache()
    assert cache.get(lambda: {"total_bytes": 1}) == {"total_bytes": 1}
    time.sleep(0.1)
    assert cache.get(lambda: {"total_bytes": 2}, fresh=True) == {"total_bytes": 2}

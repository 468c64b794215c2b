"""One app and one trained cats-vs-dogs model shared by the whole test session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, photo_files, photos
from vision_trainer.api.app import create_app

TRAIN_PER_CLASS = 40


@pytest.fixture(scope="session")
def live_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("e2e") / "data")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="session")
def cats_dogs_job(live_client: TestClient) -> dict[str, Any]:
    """efficientnet_lite0 trained on 40 cats and 40 dogs from cats_dogs/train, with wait=true."""
    cats = photo_files(photos("cats_dogs", "train", "cats", count=TRAIN_PER_CLASS))
    dogs = photo_files(photos("cats_dogs", "train", "dogs", count=TRAIN_PER_CLASS))
    files = [("files1", f) for f in cats] + [("files2", f) for f in dogs]
    data = {"label1": "cat", "label2": "dog", "epochs": "5", "backbone": "efficientnet_lite0", "wait": "true"}
    response = live_client.post("/train", data=data, files=files)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job
    return job

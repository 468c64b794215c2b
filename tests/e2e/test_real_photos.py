"""End to end on real photos: train through the API, then predict photos it never saw."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import photo_files, photos

pytestmark = pytest.mark.slow


def accuracy_through_predict(client, model_id: str, truth: dict[str, list]) -> float:
    hits = total = 0
    for label, paths in truth.items():
        for name, content, mime in photo_files(paths):
            response = client.post("/predict", data={"model_id": model_id}, files={"file": (name, content, mime)})
            assert response.status_code == 200, response.text
            hits += response.json()["prediction"] == label
            total += 1
    return hits / total


def test_cats_vs_dogs_beats_85_percent_on_val_photos(live_client, cats_dogs_job) -> None:
    assert cats_dogs_job["message"].startswith("Training succeeded")
    epochs = [line for line in cats_dogs_job["log"] if line.startswith("Epoch")]
    assert len(epochs) == 5
    assert all(
        re.fullmatch(r"Epoch \d/5 Loss: \d\.\d{4} Train Acc: [01]\.\d{4} Test Acc: [01]\.\d{4}", line)
        for line in epochs
    )
    val = {
        "cat": photos("cats_dogs", "val", "cats", count=20),
        "dog": photos("cats_dogs", "val", "dogs", count=20),
    }
    assert accuracy_through_predict(live_client, cats_dogs_job["model_id"], val) >= 0.85


def test_model_record_and_checkpoint_match_the_design(live_client, cats_dogs_job, tmp_path) -> None:
    model = live_client.get(f"/models/{cats_dogs_job['model_id']}").json()
    assert model["class_names"] == ["cat", "dog"] and model["job_id"] == cats_dogs_job["job_id"]
    assert model["data"]["per_class_counts"] == {"cat": 40, "dog": 40}
    data = model["data"]
    assert data["train_count"] + data["test_count"] == 80 and data["test_count"] == len(data["test_image_ids"])
    assert (
        8 <= data["test_count"] <= 26
        and data["dataset_version"] == 2
        and data["dataset_id"] == cats_dogs_job["dataset_id"]
    )
    assert len(model["data"]["content_hash"]) == 64 and model["data"]["split_seed"] == 0
    assert model["metrics"]["confusion_matrix"] and set(model["metrics"]["per_class"]) == {"cat", "dog"}
    path = tmp_path / "trained_model.pth"
    path.write_bytes(live_client.get(f"/models/{cats_dogs_job['model_id']}/checkpoint").content)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format_version"] == 1
    assert checkpoint["temperature"] == model["metrics"]["calibration"]["temperature"] > 0
    assert checkpoint["metrics"]["test_accuracy"] == model["metrics"]["test_accuracy"]


def test_five_flower_classes_well_above_chance(live_client) -> None:
    classes = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    data = {f"label{n}": name for n, name in enumerate(classes, start=1)}
    data.update(epochs="5", augment_views="1", wait="true", backbone="efficientnet_lite0")
    files = [
        (f"files{n}", f)
        for n, name in enumerate(classes, start=1)
        for f in photo_files(photos("flowers5", name, count=20))
    ]
    job = live_client.post("/train", data=data, files=files).json()
    assert job["status"] == "succeeded", job
    assert job["class_names"] == classes
    held_out = {name: photos("flowers5", name, start=200, count=10) for name in classes}
    assert accuracy_through_predict(live_client, job["model_id"], held_out) >= 0.6

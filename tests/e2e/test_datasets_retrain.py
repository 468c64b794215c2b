"""Improve a dataset and retrain on real photos: only new photos' features are computed, the split holds,
a model stores its head, and its images outlive its job."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.conftest import photo_files, photos
from vision_trainer.ml.checkpoint import load_checkpoint
from vision_trainer.ml.images import open_image
from vision_trainer.ml.predictor import Predictor

pytestmark = pytest.mark.slow

NEW_PER_CLASS = 5


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def retrained(live_client, cats_dogs_job) -> dict:
    """The session's cats-vs-dogs dataset with 5 more photos per class, trained again."""
    client = live_client
    dataset_id = cats_dogs_job["dataset_id"]
    first = client.get(f"/models/{cats_dogs_job['model_id']}").json()
    data_dir = client.app.state.services.files.root
    before = {"total": tree_bytes(data_dir), "features": tree_bytes(data_dir / "features")}
    cats = photo_files(photos("cats_dogs", "train", "cats", start=100, count=NEW_PER_CLASS))
    dogs = photo_files(photos("cats_dogs", "train", "dogs", start=100, count=NEW_PER_CLASS))
    added = client.post(
        f"/datasets/{dataset_id}/images",
        data={"label1": "cat", "label2": "dog"},
        files=[("files1", f) for f in cats] + [("files2", f) for f in dogs],
    )
    assert added.status_code == 200, added.text
    job = client.post(
        f"/datasets/{dataset_id}/train", data={"epochs": "5", "backbone": "efficientnet_lite0", "wait": "true"}
    ).json()
    assert job["status"] == "succeeded", job
    second = client.get(f"/models/{job['model_id']}").json()
    new_photos = {a["image_id"] for a in added.json()["added"]}
    return {
        "first": first,
        "second": second,
        "job": job,
        "added": added.json(),
        "new": new_photos,
        "before": before,
        "data_dir": data_dir,
    }


def test_a_retrain_computes_only_the_new_photos_features(retrained) -> None:
    first, second, job = retrained["first"], retrained["second"], retrained["job"]
    views = 1 + first["params"]["augment_views"]
    new_train = [i for i in second["data"]["train_image_ids"] if i in retrained["new"]]
    new_held = [
        i for i in second["data"]["validation_image_ids"] + second["data"]["test_image_ids"] if i in retrained["new"]
    ]
    assert second["metrics"]["features_extracted"] == len(new_train) * views + len(new_held)
    assert second["metrics"]["features_reused"] == first["metrics"]["features_extracted"]
    computed, reused = second["metrics"]["features_extracted"], second["metrics"]["features_reused"]
    assert f"Features: {computed} computed, {reused} reused" in job["log"]
    assert second["data"]["dataset_version"] == first["data"]["dataset_version"] + 1
    assert second["data"]["per_class_counts"] == {"cat": 40 + NEW_PER_CLASS, "dog": 40 + NEW_PER_CLASS}


def test_adding_photos_never_moves_a_training_photo_into_the_test_set(retrained) -> None:
    first, second = retrained["first"]["data"], retrained["second"]["data"]
    old_train = set(first["train_image_ids"]) | set(first["validation_image_ids"])
    assert old_train and not old_train & set(second["test_image_ids"])
    assert set(first["test_image_ids"]) <= set(second["test_image_ids"])
    assert len(first["train_image_ids"]) + len(first["validation_image_ids"]) + len(first["test_image_ids"]) == 80


def test_a_retrain_stores_a_head_not_a_backbone(retrained) -> None:
    data_dir = retrained["data_dir"]
    model_dir = data_dir / "models" / retrained["second"]["model_id"]
    # The head and the training photos' novelty reference (float16 features, one row per training photo):
    # a few kilobytes per photo, never another copy of the backbone (~14 MB).
    train_count = retrained["second"]["metrics"]["train_count"]
    reference = train_count * retrained["second"]["metrics"]["feature_depth"]["columns"] * 2
    assert [p.name for p in model_dir.iterdir()] == ["head.pth"]
    assert tree_bytes(model_dir) < 64 * 1024 + reference, (tree_bytes(model_dir), reference)
    photos_added = sum(
        p.stat().st_size
        for p in (data_dir / "datasets" / retrained["job"]["dataset_id"]).iterdir()
        if p.stem in retrained["new"]
    )
    features = tree_bytes(data_dir / "features") - retrained["before"]["features"]
    grown = tree_bytes(data_dir) - retrained["before"]["total"]
    # Photos, their features, a head, and a little database growth; a backbone copy would be ~14 MB.
    assert grown < photos_added + features + 2 * 1024 * 1024, (grown, photos_added, features)


def test_the_checkpoint_of_a_head_only_model_is_complete_and_matches_predict(live_client, retrained) -> None:
    model_id = retrained["second"]["model_id"]
    response = live_client.get(f"/models/{model_id}/checkpoint")
    assert response.status_code == 200
    checkpoint = load_checkpoint(io.BytesIO(response.content))
    assert checkpoint["format_version"] == 1 and checkpoint["class_names"] == ["cat", "dog"]
    assert "classifier.weight" in checkpoint["model_state_dict"] and len(checkpoint["model_state_dict"]) > 100
    predictor = Predictor.from_checkpoint(checkpoint)
    photo = photos("cats_dogs", "val", "dogs", start=3, count=1)[0]
    served = live_client.post(
        "/predict", data={"model_id": model_id}, files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}
    ).json()
    local = predictor.predict([open_image(photo, draft_size=predictor.resize_size)], top_k=2)[0]
    assert served["prediction"] == local[0][0] == "dog"
    assert abs(served["confidence"] - local[0][1]) < 1e-3
    assert not list((retrained["data_dir"] / "tmp").iterdir())  # the assembled file was removed after sending


def test_images_belong_to_the_dataset_and_outlive_the_job(live_client, retrained) -> None:
    second = retrained["second"]
    test_images = second["data"]["test_images"]
    assert test_images and all(t["filename"].endswith(".jpg") for t in test_images)
    for wrong in second["metrics"]["misclassified"]:
        assert wrong["filename"].endswith(".jpg")
    assert live_client.delete(f"/jobs/{retrained['job']['job_id']}").status_code == 204
    image = live_client.get(f"/models/{second['model_id']}/images/{test_images[0]['image_id']}")
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    dataset = live_client.get(f"/datasets/{second['dataset_id']}").json()
    listed = [m["model_id"] for m in dataset["models"]]  # newest first
    assert listed[0] == second["model_id"] and retrained["first"]["model_id"] in listed

"""Two models judged on the same photos: intervals, per-class scores and a paired test."""

from __future__ import annotations

import pytest

from tests.conftest import photo_files, photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_models(live_client, cats_dogs_job) -> list[str]:
    """The session's model and one trained for 1 epoch without augmentation on the same dataset."""
    quick = live_client.post(
        f"/datasets/{cats_dogs_job['dataset_id']}/train",
        data={"epochs": "1", "augment_views": "0", "backbone": "efficientnet_lite0", "wait": "true", "name": "quick"},
    ).json()
    assert quick["status"] == "succeeded", quick
    return [cats_dogs_job["model_id"], quick["model_id"]]


def test_compare_on_uploaded_photos(live_client, two_models) -> None:
    cats = photo_files(photos("cats_dogs", "val", "cats", start=20, count=10))
    dogs = photo_files(photos("cats_dogs", "val", "dogs", start=20, count=10))
    response = live_client.post(
        "/models/compare",
        data={"model_ids": ",".join(two_models), "label1": "cat", "label2": "dog"},
        files=[("files1", f) for f in cats] + [("files2", f) for f in dogs],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["photos"] == 20 and body["class_names"] == ["cat", "dog"] and len(body["models"]) == 2
    for result in body["models"]:
        low, high = result["accuracy_ci"]
        assert low <= result["accuracy"] <= high and result["accuracy"] >= 0.7
        assert set(result["per_class"]) == {"cat", "dog"} and "f1" in result["per_class"]["cat"]
        assert sum(map(sum, result["confusion_matrix"])) == 20
        right = sum(result["confusion_matrix"][i][i] for i in range(2))
        assert right == round(result["accuracy"] * 20)
    (pair,) = body["pairs"]
    assert 0 <= pair["p_value"] <= 1 and pair["significant"] == (pair["p_value"] < 0.05) and pair["verdict"]
    a, b = body["models"]
    assert round((a["accuracy"] - b["accuracy"]) * 20) == pair["only_a_right"] - pair["only_b_right"]


def test_compare_on_a_dataset_skips_photos_the_models_trained_on(live_client, cats_dogs_job, two_models) -> None:
    body = live_client.post(
        "/models/compare", data={"model_ids": two_models, "dataset_id": cats_dogs_job["dataset_id"]}
    )
    assert body.status_code == 200, body.text
    model = live_client.get(f"/models/{two_models[0]}").json()
    assert 0 < body.json()["photos"] <= len(model["data"]["test_image_ids"]) + 20


def test_compare_refusals(live_client, two_models) -> None:
    assert (
        live_client.post("/models/compare", data={"model_ids": two_models[0], "dataset_id": "x"}).json()["code"]
        == "invalid_parameter"
    )
    assert live_client.post("/models/compare", data={"model_ids": two_models}).json()["code"] == "invalid_parameter"
    missing = live_client.post("/models/compare", data={"model_ids": [two_models[0], "f" * 32], "dataset_id": "f" * 32})
    assert missing.status_code == 404
    assert live_client.post("/models/compare", data={"model_id": two_models}).json()["code"] == "unknown_field"

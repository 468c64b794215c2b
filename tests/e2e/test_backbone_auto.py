"""backbone=auto picks by cross-validated accuracy on the training photos, never looking at the test split."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_auto_compares_backbones_on_training_photos_only(live_client, cats_dogs_job) -> None:
    dataset_id = cats_dogs_job["dataset_id"]
    job = live_client.post(
        f"/datasets/{dataset_id}/train", data={"backbone": "auto", "epochs": "3", "augment_views": "0", "wait": "true"}
    ).json()
    assert job["status"] == "succeeded", job
    model = live_client.get(f"/models/{job['model_id']}").json()
    rows = model["metrics"]["backbone_selection"]
    names = [row["backbone"] for row in rows]
    assert names[:1] == ["efficientnet_lite0"] and {"efficientnet_lite1", "efficientnet_lite2"} <= set(names)
    best = max(row["cv_accuracy"] for row in rows)
    chosen = next(row for row in rows if row["backbone"] == model["backbone"])
    assert chosen["cv_accuracy"] >= best - 0.005 and all(row["seconds"] > 0 for row in rows)
    assert model["params"]["backbone_requested"] == "auto"
    assert any(line.startswith(f"Backbone auto: {model['backbone']}") for line in job["log"])

    # Every candidate's features were computed for training photos only: the cache holds no test photo
    # of a backbone that was not chosen (the chosen one then computed the test photos to evaluate;
    # efficientnet_lite0 trained earlier jobs of this session).
    images = live_client.get(f"/datasets/{dataset_id}/images", params={"limit": 500}).json()["items"]
    hash_of = {i["image_id"]: i["content_hash"] for i in images}
    test_hashes = {hash_of[i] for i in model["data"]["test_image_ids"]}
    features = live_client.app.state.services.files.root / "features"
    for folder in features.iterdir():
        if not folder.name.startswith(("efficientnet_lite1-", "efficientnet_lite2-")):
            continue
        if folder.name.startswith(model["backbone"] + "-"):
            continue
        cached = {p.name.split(".")[0] for p in folder.rglob("*.npy")}
        assert cached and not cached & test_hashes, folder.name

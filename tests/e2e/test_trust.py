"""Predictions that say when a photo is unlike the training photos, and where the model looked, on the
session's cats-vs-dogs model and real photos of other datasets."""

from __future__ import annotations

import base64
import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import photos

pytestmark = pytest.mark.slow


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def predict(client, data: bytes, **fields: str) -> dict:
    response = client.post("/predict", files={"file": ("photo.jpg", data, "image/jpeg")}, data=fields)
    assert response.status_code == 200, response.text
    return response.json()


def test_photos_of_other_datasets_are_novel_and_reject_novel_answers_unknown(live_client, cats_dogs_job) -> None:
    model = live_client.get(f"/models/{cats_dogs_job['model_id']}").json()
    report = model["metrics"]["novelty"]
    assert report["calibrated_share"] == 0.05 and report["test_count"] == model["data"]["test_count"]
    assert report["test_novel"] <= max(2, 0.2 * report["test_count"])
    foreign = photos("flowers5", "rose", count=5) + photos("eurosat_rgb", "val", "Forest", count=5)
    familiar = photos("cats_dogs", "val", "cats", count=5) + photos("cats_dogs", "val", "dogs", count=5)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in foreign + familiar]
    batch = live_client.post("/predict/batch", files=files, data={"model_id": cats_dogs_job["model_id"]}).json()
    novel = [item["novelty"]["novel"] for item in batch["predictions"]]
    assert sum(novel[:10]) >= 9 and sum(novel[10:]) <= 2, batch
    assert all(item["prediction"] in ("cat", "dog") for item in batch["predictions"])  # reject_novel is off
    flagged = next(p for p, item in zip(foreign, batch["predictions"]) if item["novelty"]["novel"])
    model_id = cats_dogs_job["model_id"]  # other tests of the session train newer (default) models
    rejected = predict(live_client, flagged.read_bytes(), reject_novel="true", model_id=model_id)
    assert rejected["prediction"] == "unknown" and rejected["novelty"]["novel"]
    assert rejected["novelty"]["score"] > rejected["novelty"]["threshold"] and len(rejected["top_k"]) == 2
    calm = next(p for p, item in zip(familiar, batch["predictions"][10:]) if not item["novelty"]["novel"])
    kept = predict(live_client, calm.read_bytes(), reject_novel="true", model_id=model_id)
    assert kept["prediction"] in ("cat", "dog") and not kept["novelty"]["novel"]


def test_the_heatmap_peak_falls_inside_a_photo_pasted_on_a_plain_canvas(live_client, cats_dogs_job) -> None:
    rng = random.Random(0)
    inside = 0
    sources = photos("cats_dogs", "val", "cats", start=10, count=5) + photos(
        "cats_dogs", "val", "dogs", start=10, count=5
    )
    for path in sources:
        photo = Image.open(path).convert("RGB")
        photo.thumbnail((300, 300))
        canvas = Image.new("RGB", (2 * max(photo.size), 2 * max(photo.size)), (128, 128, 128))
        left, top = rng.randrange(0, canvas.width - photo.width), rng.randrange(0, canvas.height - photo.height)
        canvas.paste(photo, (left, top))
        answer = predict(live_client, jpeg(canvas), explain="true")
        heatmap = answer["heatmap"]
        grid = np.array(heatmap["grid"])
        assert heatmap["label"] == answer["prediction"] and grid.shape == (7, 7)
        assert grid.min() >= 0 and grid.max() == 1.0
        box_left, box_top, box_right, box_bottom = heatmap["box"]
        assert 0 <= box_left < box_right <= canvas.width and 0 <= box_top < box_bottom <= canvas.height
        assert Image.open(io.BytesIO(base64.b64decode(heatmap["png"]))).format == "PNG"
        row, col = np.unravel_index(grid.argmax(), grid.shape)
        x = box_left + (col + 0.5) / grid.shape[1] * (box_right - box_left)
        y = box_top + (row + 0.5) / grid.shape[0] * (box_bottom - box_top)
        inside += left <= x <= left + photo.width and top <= y <= top + photo.height
    assert inside >= 7


def test_the_heatmap_box_is_in_the_uploaded_pixels_after_exif_rotation(live_client, cats_dogs_job) -> None:
    photo = Image.open(photos("cats_dogs", "val", "dogs", count=1)[0]).convert("RGB").resize((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 200 wide, 400 high
    out = io.BytesIO()
    photo.save(out, format="JPEG", exif=exif.tobytes())
    left, top, right, bottom = predict(live_client, out.getvalue(), explain="true")["heatmap"]["box"]
    assert right <= 200 and bottom <= 400 and bottom - top == right - left and top > 0


def test_non_boolean_options_are_422(live_client, cats_dogs_job) -> None:
    data = photos("cats_dogs", "val", "cats", count=1)[0].read_bytes()
    for field in ("reject_novel", "explain"):
        response = live_client.post("/predict", files={"file": ("a.jpg", data, "image/jpeg")}, data={field: "maybe"})
        assert response.status_code == 422 and field in response.text, response.text


def test_an_imported_model_without_features_explains_but_has_no_novelty(live_client, cats_dogs_job) -> None:
    checkpoint = torch.load(
        io.BytesIO(live_client.get(f"/models/{cats_dogs_job['model_id']}/checkpoint").content), weights_only=True
    )
    checkpoint.pop("novelty", None)
    out = io.BytesIO()
    torch.save(checkpoint, out)
    imported = live_client.post("/models/import", files={"file": ("trained_model.pth", out.getvalue())}).json()
    data = photos("cats_dogs", "val", "dogs", count=1)[0].read_bytes()
    answer = predict(live_client, data, model_id=imported["model_id"], explain="true")
    assert answer["novelty"] is None and "retrain" in answer["novelty_note"]
    assert answer["prediction"] == "dog" and np.array(answer["heatmap"]["grid"]).max() == 1.0

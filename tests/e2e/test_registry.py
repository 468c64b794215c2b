"""Model registry, evaluation report, calibrated predictions, batch, exports and import on real photos."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import data_dir_files, image_bytes, multipart, photo_files, photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def val_photos() -> list[tuple[str, bytes, str]]:
    return photo_files(
        photos("cats_dogs", "val", "cats", start=50, count=5) + photos("cats_dogs", "val", "dogs", start=50, count=5)
    )


def test_evaluation_report_is_complete(live_client, cats_dogs_job) -> None:
    model = live_client.get(f"/models/{cats_dogs_job['model_id']}").json()
    metrics = model["metrics"]
    # Held out by content hash: about 20 % of the 80 photos, never fewer than one per class.
    assert metrics["test_count"] == len(model["data"]["test_image_ids"]) and 8 <= metrics["test_count"] <= 26
    assert metrics["test_accuracy"] >= 0.8  # val accuracy is >= 0.85 (test_real_photos)
    matrix = metrics["confusion_matrix"]
    assert metrics["test_accuracy"] == pytest.approx((matrix[0][0] + matrix[1][1]) / metrics["test_count"])
    for scores in metrics["per_class"].values():
        assert set(scores) == {"precision", "recall", "f1", "support"}
    assert [sum(row) for row in metrics["confusion_matrix"]] == [s["support"] for s in metrics["per_class"].values()]
    calibration = metrics["calibration"]
    assert calibration["temperature"] > 0 and {"ece_before", "ece_after"} <= set(calibration)  # values: tests/ml
    # The temperature is fitted on out-of-fold predictions over all training photos (no fold held back).
    assert metrics["validation_count"] == 0 and calibration["fitted_on"] == "out_of_fold"
    assert len(metrics["cv_accuracy"]["folds"]) == 5 and metrics["cv_accuracy"]["mean"] >= 0.8
    low, high = metrics["test_accuracy_ci"]
    assert low <= metrics["test_accuracy"] <= high < 1.0 or metrics["test_accuracy"] == high == 1.0
    assert metrics["warnings"] and "is rough" in metrics["warnings"][0]  # fewer than 30 test photos
    assert metrics["train_count"] + metrics["validation_count"] + metrics["test_count"] == 80
    for wrong in metrics["misclassified"]:
        assert wrong["true"] != wrong["predicted"] and wrong["image_id"] in model["data"]["test_image_ids"]
    image = live_client.get(f"/models/{model['model_id']}/images/{model['data']['test_image_ids'][0]}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    Image.open(io.BytesIO(image.content)).verify()
    assert live_client.get(f"/models/{model['model_id']}/images/{'f' * 32}").status_code == 404


def test_report_png_is_a_picture(live_client, cats_dogs_job) -> None:
    response = live_client.get(f"/models/{cats_dogs_job['model_id']}/report.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "PNG" and picture.width > 600


def test_min_confidence_answers_unknown_but_keeps_top_k(live_client, cats_dogs_job, val_photos) -> None:
    model_id = cats_dogs_job["model_id"]
    plain = live_client.post("/predict", data={"model_id": model_id}, files={"file": val_photos[0]}).json()
    assert plain["prediction"] == "cat"  # val_photos[0] is a cat
    confidence = plain["confidence"]
    above = live_client.post(
        "/predict", data={"model_id": model_id, "min_confidence": str(confidence / 2)}, files={"file": val_photos[0]}
    ).json()
    assert above["prediction"] == plain["prediction"]
    below = live_client.post(
        "/predict", data={"model_id": model_id, "min_confidence": "1.0"}, files={"file": val_photos[0]}
    ).json()
    if confidence < 1.0:
        assert below["prediction"] == "unknown"
    assert [r["label"] for r in below["top_k"]] == [r["label"] for r in plain["top_k"]]
    bad = live_client.post("/predict", data={"min_confidence": "1.5"}, files={"file": val_photos[0]})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_parameter"


def test_batch_predictions_match_single_ones_and_isolate_bad_files(live_client, cats_dogs_job, val_photos) -> None:
    model_id = cats_dogs_job["model_id"]
    files = [("files", f) for f in val_photos[:3]] + [("files", ("notes.jpg", b"text", "image/jpeg"))]
    body = live_client.post("/predict/batch", data={"model_id": model_id, "top_k": "2"}, files=files).json()
    assert body["model_id"] == model_id and len(body["predictions"]) == 4
    assert (
        body["predictions"][3]["filename"] == "notes.jpg"
        and body["predictions"][3]["error"]["code"] == "unsupported_format"
    )
    for photo, entry in zip(val_photos[:3], body["predictions"]):
        single = live_client.post("/predict", data={"model_id": model_id}, files={"file": photo}).json()
        assert entry["filename"] == photo[0] and entry["prediction"] == single["prediction"]
        assert abs(entry["confidence"] - single["confidence"]) < 1e-4


def test_onnx_export_with_metadata_alone_agrees_with_predict(live_client, cats_dogs_job, val_photos, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    response = live_client.get(f"/models/{cats_dogs_job['model_id']}/export", params={"format": "onnx"})
    assert response.status_code == 200
    path = tmp_path / "model.onnx"
    path.write_bytes(response.content)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    names, mean, std = json.loads(meta["vt.class_names"]), json.loads(meta["vt.mean"]), json.loads(meta["vt.std"])
    size, resize = int(meta["vt.input_size"]), int(meta["vt.resize_size"])
    assert names == ["cat", "dog"] and meta["vt.backbone"] == "efficientnet_lite0"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def preprocess(content: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(content)).convert("RGB")
        scale = resize / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        return ((array - mean) / std).transpose(2, 0, 1).astype(np.float32)

    batch = np.stack([preprocess(content) for _, content, _ in val_photos])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]  # dynamic batch axis
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for photo, row in zip(val_photos, probs):
        served = live_client.post(
            "/predict", data={"model_id": cats_dogs_job["model_id"]}, files={"file": photo}
        ).json()
        assert names[int(row.argmax())] == served["prediction"]
        assert abs(float(row.max()) - served["confidence"]) < 0.02


def test_torchscript_export_carries_metadata_and_agrees(live_client, cats_dogs_job, val_photos, tmp_path) -> None:
    response = live_client.get(f"/models/{cats_dogs_job['model_id']}/export", params={"format": "torchscript"})
    assert response.status_code == 200
    path = tmp_path / "model.pt"
    path.write_bytes(response.content)
    extra = {"vt.class_names": "", "vt.mean": "", "vt.input_size": "", "vt.temperature": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["vt.class_names"]) == ["cat", "dog"] and int(extra["vt.input_size"]) == 224
    checkpoint = torch.load(
        io.BytesIO(live_client.get(f"/models/{cats_dogs_job['model_id']}/checkpoint").content), weights_only=True
    )
    assert float(extra["vt.temperature"]) == pytest.approx(checkpoint["temperature"])
    with torch.inference_mode():
        assert module(torch.zeros(3, 3, 224, 224)).shape == (3, 2)
    bad = live_client.get(f"/models/{cats_dogs_job['model_id']}/export", params={"format": "pickle"})
    assert bad.status_code == 422


def test_default_alias_rename_and_delete(live_client, cats_dogs_job, colour_images, tmp_path) -> None:
    data, files = multipart(
        {"red": colour_images((220, 30, 30), 4), "blue": colour_images((30, 30, 220), 4)},
        epochs="2",
        wait="true",
        augment_views="0",
    )
    extra = live_client.post("/train", data=data, files=files).json()
    assert extra["status"] == "succeeded"
    extra_id, keep_id = extra["model_id"], cats_dogs_job["model_id"]

    assert live_client.get("/models/default").json()["code"] == "no_default"  # no test set one before
    assert live_client.put("/models/default", json={"model_id": "0" * 32}).status_code == 404
    assert live_client.put("/models/default", json={"model_id": extra_id}).json()["model_id"] == extra_id
    assert live_client.get("/models/default").json()["model_id"] == extra_id
    photo = ("r.png", image_bytes((220, 30, 30)), "image/png")
    assert live_client.post("/predict", files={"file": photo}).json()["model_id"] == extra_id

    renamed = live_client.patch(f"/models/{extra_id}", json={"name": "  colours v2 "}).json()
    assert renamed["name"] == "colours v2"
    assert live_client.patch(f"/models/{extra_id}", json={"name": ""}).status_code == 422
    assert live_client.get("/models").json()["items"][0]["name"] == "colours v2"

    data_dir = Path(live_client.app.state.services.files.root)
    assert (data_dir / "models" / extra_id).is_dir()
    assert live_client.delete(f"/models/{extra_id}").status_code == 204
    assert not (data_dir / "models" / extra_id).exists()
    for response in (
        live_client.get(f"/models/{extra_id}"),
        live_client.delete(f"/models/{extra_id}"),
        live_client.post("/predict", data={"model_id": extra_id}, files={"file": photo}),
    ):
        assert response.status_code == 404
    assert live_client.get("/models/default").json()["code"] == "no_default"
    assert live_client.post("/predict", files={"file": photo}).status_code == 200  # newest remaining model

    # Photos belong to the dataset, not the job: deleting a job leaves them, and its model keeps working.
    dataset_dir = data_dir / "datasets" / extra["dataset_id"]
    kept = sorted(p.name for p in dataset_dir.iterdir())
    assert kept and live_client.delete(f"/jobs/{extra['job_id']}").status_code == 204
    assert sorted(p.name for p in dataset_dir.iterdir()) == kept
    assert live_client.get(f"/jobs/{extra['job_id']}").status_code == 404
    assert live_client.post("/predict", data={"model_id": keep_id}, files={"file": photo}).status_code == 200


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))

    marker = ""


def test_import_our_checkpoint_and_refuse_a_malicious_pickle(live_client, cats_dogs_job, val_photos, tmp_path) -> None:
    content = live_client.get(f"/models/{cats_dogs_job['model_id']}/checkpoint").content
    imported = live_client.post(
        "/models/import",
        data={"name": "copy"},
        files={"file": ("trained_model.pth", content, "application/octet-stream")},
    )
    assert imported.status_code == 201, imported.text
    model = imported.json()
    assert model["metrics"] is None and model["job_id"] is None and model["class_names"] == ["cat", "dog"]
    for photo in val_photos[:3]:
        a = live_client.post("/predict", data={"model_id": model["model_id"]}, files={"file": photo}).json()
        b = live_client.post("/predict", data={"model_id": cats_dogs_job["model_id"]}, files={"file": photo}).json()
        assert a["prediction"] == b["prediction"] and abs(a["confidence"] - b["confidence"]) < 1e-5
    onnx = live_client.get(f"/models/{model['model_id']}/export", params={"format": "onnx"})
    assert onnx.status_code == 200  # checked on generated images: imported models have no stored photos

    data_dir = Path(live_client.app.state.services.files.root)
    before = data_dir_files(data_dir)
    count = live_client.get("/models").json()["count"]
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    buffer = io.BytesIO()
    torch.save({"model_state_dict": {}, "class_names": ["a", "b"], "x": _Exploit()}, buffer)
    raw_pickle = pickle.dumps(_Exploit())
    for payload in (buffer.getvalue(), raw_pickle, b"not a checkpoint"):
        response = live_client.post("/models/import", files={"file": ("evil.pth", payload, "application/octet-stream")})
        assert response.status_code == 422 and response.json()["code"] == "invalid_checkpoint"
    assert not marker.exists()
    assert data_dir_files(data_dir) == before and live_client.get("/models").json()["count"] == count

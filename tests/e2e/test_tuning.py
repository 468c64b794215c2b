"""``tune=top`` on photos unlike ImageNet (eurosat_rgb, satellite land use): the tuned model beats the
head-only one on held-out photos, its full checkpoint and ONNX export answer as /predict does, and a
retrain reuses the cached activations."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import make_settings, photo_files, photos
from vision_trainer.api.app import create_app
from vision_trainer.ml.data import Normalizer, plain_view
from vision_trainer.ml.predictor import Predictor

pytestmark = pytest.mark.slow

# Four classes of fields and meadows, which ImageNet's last layer hardly tells apart.
CLASSES = ["AnnualCrop", "HerbaceousVegetation", "Pasture", "PermanentCrop"]
TRAIN, HELD_OUT = 40, 25


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    settings = make_settings(tmp_path_factory.mktemp("tuning") / "data")
    with TestClient(create_app(settings)) as client:
        yield client


def train(client: TestClient, **options: str) -> dict[str, Any]:
    files = [
        (f"files{i}", f)
        for i, name in enumerate(CLASSES, 1)
        for f in photo_files(photos("eurosat_rgb", "train", name, count=TRAIN))
    ]
    labels = {f"label{i}": name for i, name in enumerate(CLASSES, 1)}
    data = {**labels, "backbone": "efficientnet_lite0", "wait": "true", **options}
    response = client.post("/train", data=data, files=files)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture(scope="module")
def held_out() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        (name, photo) for name in CLASSES for photo in photo_files(photos("eurosat_rgb", "val", name, count=HELD_OUT))
    ]


@pytest.fixture(scope="module")
def jobs(client: TestClient) -> dict[str, dict[str, Any]]:
    return {"head": train(client, tune="head"), "top": train(client, tune="top")}


def answers(client: TestClient, model_id: str, held_out) -> list[dict[str, Any]]:
    return [client.post("/predict", data={"model_id": model_id}, files={"file": photo}).json() for _, photo in held_out]


def test_a_tuned_top_beats_the_head_alone_on_held_out_photos(client, jobs, held_out) -> None:
    scores = {}
    for tune, job in jobs.items():
        got = answers(client, job["model_id"], held_out)
        scores[tune] = np.mean([a["prediction"] == name for a, (name, _) in zip(got, held_out)])
    assert scores["top"] > scores["head"] > 1 / len(CLASSES), scores
    top = jobs["top"]
    tuning = top["metrics"]["tuning"]
    assert tuning["kept"] == "top" and tuning["cut"] == "conv_head" and tuning["layers"] == ["conv_head", "bn2"]
    assert any(line.startswith("Tuned conv_head: validation ") for line in top["log"])
    assert sum(line.startswith("Tuned epoch ") for line in top["log"]) == 5
    assert "tuning" not in jobs["head"]["metrics"]  # tune=head: today's path


def test_the_full_checkpoint_holds_the_tuned_layers_and_answers_as_predict(client, jobs, held_out) -> None:
    model_id = jobs["top"]["model_id"]
    checkpoint = torch.load(io.BytesIO(client.get(f"/models/{model_id}/checkpoint").content), weights_only=True)
    assert "tuned_state_dict" not in checkpoint and "conv_head.weight" in checkpoint["model_state_dict"]
    head_only = torch.load(
        io.BytesIO(client.get(f"/models/{jobs['head']['model_id']}/checkpoint").content), weights_only=True
    )
    # the trunk is the shared backbone's, the top is the model's own
    assert torch.equal(
        checkpoint["model_state_dict"]["blocks.6.0.conv_pw.weight"],
        head_only["model_state_dict"]["blocks.6.0.conv_pw.weight"],
    )
    assert not torch.equal(
        checkpoint["model_state_dict"]["conv_head.weight"], head_only["model_state_dict"]["conv_head.weight"]
    )
    whole = Predictor.from_checkpoint(checkpoint)  # the whole network in torch, nothing shared
    transform, normalize = plain_view(checkpoint["preprocessing"]), Normalizer(checkpoint["preprocessing"])
    for (_, photo), served in zip(held_out[::10], answers(client, model_id, held_out[::10])):
        image = Image.open(io.BytesIO(photo[1])).convert("RGB")
        probs = whole.probabilities([image])[0]
        assert checkpoint["class_names"][int(probs.argmax())] == served["prediction"]
        assert abs(float(probs.max()) - served["confidence"]) < 1e-3
        assert normalize(transform(image)[None]).shape[-1] == checkpoint["preprocessing"]["input_size"]


def test_the_onnx_export_of_a_tuned_model_answers_as_predict(client, jobs, held_out, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model_id = jobs["top"]["model_id"]
    response = client.get(f"/models/{model_id}/export", params={"format": "onnx"})
    assert response.status_code == 200, response.text
    path = tmp_path / "model.onnx"
    path.write_bytes(response.content)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    names = json.loads(meta["vt.class_names"])
    preprocessing = {
        "input_size": int(meta["vt.input_size"]),
        "resize_size": int(meta["vt.resize_size"]),
        "mean": json.loads(meta["vt.mean"]),
        "std": json.loads(meta["vt.std"]),
    }
    transform, normalize = plain_view(preprocessing), Normalizer(preprocessing)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sample = held_out[::10]
    batch = normalize(torch.stack([transform(Image.open(io.BytesIO(p[1])).convert("RGB")) for _, p in sample]))
    logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0])
    probs = torch.softmax(logits, dim=1)  # the export divides by the temperature itself
    for row, served in zip(probs, answers(client, model_id, sample)):
        assert names[int(row.argmax())] == served["prediction"]
        assert abs(float(row.max()) - served["confidence"]) < 1e-3


def test_a_retrain_reuses_the_cached_activations(client, jobs) -> None:
    again = train(client, tune="top")
    tuning = again["metrics"]["tuning"]
    first = jobs["top"]["metrics"]["tuning"]
    assert tuning["activations_computed"] == 0
    assert tuning["activations_reused"] == first["activations_computed"] + first["activations_reused"]


def test_a_tuned_model_explains_reports_novelty_and_compares(client, jobs, held_out) -> None:
    top, head = jobs["top"]["model_id"], jobs["head"]["model_id"]
    name, photo = held_out[0]
    answer = client.post("/predict", data={"model_id": top, "explain": "true"}, files={"file": photo}).json()
    grid = np.array(answer["heatmap"]["grid"])
    assert answer["heatmap"]["label"] == answer["prediction"] and grid.min() >= 0 and grid.max() == 1.0
    assert grid.shape[0] == grid.shape[1] >= 2  # over the tuned layers' own feature map
    novelty = answer["novelty"]  # the reference: the tuned top's features of the training photos
    assert (
        novelty is not None
        and novelty["threshold"] > 0
        and novelty["novel"] == (novelty["score"] > novelty["threshold"])
    )
    model = client.get(f"/models/{top}").json()
    assert model["metrics"]["novelty"]["test_count"] == model["data"]["test_count"]
    foreign = photo_files(photos("cats_dogs", "val", "cats", count=5))
    batch = client.post("/predict/batch", data={"model_id": top}, files=[("files", f) for f in foreign]).json()
    assert sum(item["novelty"]["novel"] for item in batch["predictions"]) >= 4, batch  # cats are not fields
    compared = client.post(
        "/models/compare",
        data={"model_ids": f"{top},{head}", **{f"label{i}": c for i, c in enumerate(CLASSES, 1)}},
        files=[(f"files{CLASSES.index(c) + 1}", p) for c, p in held_out],
    )
    assert compared.status_code == 200, compared.text
    scores = {m["model_id"]: m["accuracy"] for m in compared.json()["models"]}
    served = answers(client, top, held_out)
    assert scores[top] == pytest.approx(np.mean([a["prediction"] == c for a, (c, _) in zip(served, held_out)]))


def test_tune_full_trains_every_layer_and_answers_as_its_checkpoint(client, jobs, held_out) -> None:
    job = train(client, tune="full", tune_epochs="1")
    tuning = job["metrics"]["tuning"]
    assert tuning["tune"] == "full" and tuning["cut"] == "full" and tuning["epochs"] == 1
    assert any(line.startswith("Fine-tuning end to end on cpu: about ") for line in job["log"])
    model_id = job["model_id"]
    checkpoint = torch.load(io.BytesIO(client.get(f"/models/{model_id}/checkpoint").content), weights_only=True)
    head_only = torch.load(
        io.BytesIO(client.get(f"/models/{jobs['head']['model_id']}/checkpoint").content), weights_only=True
    )
    # every layer moved, the stem too, and the checkpoint is the seed's shape (final features only)
    for key in ("conv_stem.weight", "blocks.6.0.conv_pw.weight", "conv_head.weight"):
        assert not torch.equal(checkpoint["model_state_dict"][key], head_only["model_state_dict"][key]), key
    assert "feature_stages" not in checkpoint and checkpoint["model_state_dict"]["classifier.weight"].shape[1] == 1280
    whole = Predictor.from_checkpoint(checkpoint)
    sample = held_out[::20]
    for (_, photo), served in zip(sample, answers(client, model_id, sample)):
        probs = whole.probabilities([Image.open(io.BytesIO(photo[1])).convert("RGB")])[0]
        assert checkpoint["class_names"][int(probs.argmax())] == served["prediction"]
        assert abs(float(probs.max()) - served["confidence"]) < 1e-3
        assert served["novelty"] is not None
    exported = client.get(f"/models/{model_id}/export", params={"format": "onnx"})
    assert exported.status_code == 200, exported.text  # verified against the server before it is served

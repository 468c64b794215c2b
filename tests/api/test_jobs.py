"""Job lifecycle through the HTTP API on tiny synthetic jobs (real efficientnet_lite0 weights)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from tests.conftest import image_bytes, multipart, wait_for_job
from vision_trainer.ml.backbones import resolve_backbone
from vision_trainer.ml.depths import depth_layout

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)


@pytest.fixture
def three_classes(colour_images):
    return {"red": colour_images(RED, 5), "green": colour_images(GREEN, 5), "blue": colour_images(BLUE, 5)}


def test_train_answers_202_then_the_job_succeeds_and_its_model_predicts(client, three_classes) -> None:
    data, files = multipart(three_classes, epochs=10, name="colours")
    response = client.post("/train", data=data, files=files)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and accepted["status_url"] == f"/jobs/{accepted['job_id']}"
    assert "message" in accepted and accepted["log"] == []

    job = wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded", job
    assert job["class_names"] == ["red", "green", "blue"] and job["epochs"] == 10 and job["epoch"] == 10
    assert job["log"][0].startswith("Backbone: efficientnet_lite0")
    assert sum(line.startswith("Epoch ") for line in job["log"]) == 10
    assert job["progress"]["phase"] == "done" and job["metrics"]["test_count"] == 3

    model = client.get(f"/models/{job['model_id']}").json()
    assert model["name"] == "colours" and model["class_names"] == ["red", "green", "blue"]
    assert model["backbone"] == "efficientnet_lite0" and "resnet18" in model["params"]["backbone_note"]
    assert model["data"]["per_class_counts"] == {"red": 5, "green": 5, "blue": 5}
    assert len(model["history"]) == 10 and set(model["history"][0]) == {"epoch", "loss", "train_acc", "test_acc"}
    assert client.get("/models").json()["count"] == 1
    assert client.get("/jobs").json()["items"][0]["job_id"] == job["job_id"]

    answer = client.post(
        "/predict", files={"file": ("b.png", image_bytes(BLUE, noise=20, seed=99), "image/png")}
    ).json()
    assert answer["prediction"] == "blue" and answer["model_id"] == job["model_id"]
    assert [r["label"] for r in answer["top_k"]][0] == "blue" and len(answer["top_k"]) == 3
    assert abs(sum(r["confidence"] for r in answer["top_k"]) - 1) < 1e-4
    one = client.post(
        "/predict", data={"top_k": "1"}, files={"file": ("r.png", image_bytes(RED, noise=20, seed=98), "image/png")}
    ).json()
    assert one["prediction"] == "red" and len(one["top_k"]) == 1
    clamped = client.post(
        "/predict", data={"top_k": "50"}, files={"file": ("r.png", image_bytes(RED), "image/png")}
    ).json()
    assert len(clamped["top_k"]) == 3


def test_wait_true_answers_200_with_the_seed_message_and_log(client, three_classes, tmp_path) -> None:
    data, files = multipart(three_classes, epochs=2, wait="true", early_stopping="true")
    response = client.post("/train", data=data, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["message"].startswith("Training succeeded")
    assert body["params"]["early_stopping"] is True and 1 <= body["metrics"]["best_epoch"] <= 2
    assert any(line.startswith("Epoch 2/2 Loss: ") for line in body["log"])

    checkpoint = client.get(f"/models/{body['model_id']}/checkpoint")
    assert checkpoint.status_code == 200
    path = tmp_path / "trained_model.pth"
    path.write_bytes(checkpoint.content)
    loaded = torch.load(path, weights_only=True)
    assert loaded["class_names"] == ["red", "green", "blue"] and loaded["backbone"] == "efficientnet_lite0"
    # The final features (1,280) and the pooled stages the backbone's entry names (ml.depths).
    width = depth_layout(resolve_backbone("efficientnet_lite0")).width
    assert loaded["model_state_dict"]["classifier.weight"].shape == (3, width) and width == 1664
    assert loaded["feature_stages"] == ["blocks.3", "blocks.4", "blocks.5"]
    assert loaded["preprocessing"] == {"input_size": 224, "resize_size": 256, "mean": [0.498] * 3, "std": [0.502] * 3}


def test_the_same_photos_in_another_order_give_the_same_model(client, three_classes) -> None:
    """Photos meet the head's SGD in content order, not in the order (or the random ids) they came with."""
    reordered = {label: list(reversed(files)) for label, files in three_classes.items()}
    models = []
    for classes in (three_classes, reordered):
        data, files = multipart(classes, epochs=3, wait="true")
        job = client.post("/train", data=data, files=files).json()
        assert job["status"] == "succeeded", job
        checkpoint = torch.load(
            io.BytesIO(client.get(f"/models/{job['model_id']}/checkpoint").content), weights_only=True
        )
        models.append(
            (job["metrics"]["cv_accuracy"], [line for line in job["log"] if line.startswith("Epoch")], checkpoint)
        )
    (cv_a, log_a, a), (cv_b, log_b, b) = models
    assert cv_a == cv_b and log_a == log_b and a["temperature"] == b["temperature"]
    assert all(torch.equal(a["model_state_dict"][k], b["model_state_dict"][k]) for k in a["model_state_dict"])


def test_events_arrive_in_order_and_end_with_the_final_status(client, three_classes) -> None:
    data, files = multipart(three_classes, epochs=3)
    job_id = client.post("/train", data=data, files=files).json()["job_id"]
    events = []
    with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind:
                events.append((kind, json.loads(line.split(":", 1)[1])))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "status" and kinds.count("status") == 1
    assert events[-1][1]["status"] == "succeeded" and events[-1][1]["model_id"]
    phases = [d["phase"] for k, d in events if k == "progress"]
    order = ["preparing", "extracting", "training", "saving"]
    assert [p for p in dict.fromkeys(phases) if p in order] == order
    epoch_lines = [d["line"] for k, d in events if k == "log" and d["line"].startswith("Epoch")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert [d["line"] for k, d in events if k == "log"] == client.get(f"/jobs/{job_id}").json()["log"]


def test_cancel_running_and_queued_jobs(client, colour_images) -> None:
    # A job long enough to still be extracting when it is cancelled.
    long_data, long_files = multipart({"red": colour_images(RED, 40), "blue": colour_images(BLUE, 40)}, augment_views=8)
    running = client.post("/train", data=long_data, files=long_files).json()["job_id"]
    data, files = multipart({"red": colour_images(RED, 3), "blue": colour_images(BLUE, 3)})
    queued = client.post("/train", data=data, files=files).json()["job_id"]

    wait_for_job(client, running, until=lambda j: j["progress"]["phase"] == "extracting" and j["progress"]["done"] > 0)
    busy = client.delete(f"/jobs/{running}")
    assert busy.status_code == 409 and busy.json()["code"] == "job_active"
    response = client.post(f"/jobs/{queued}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert client.post(f"/jobs/{running}/cancel").status_code == 202

    job = wait_for_job(client, running, timeout=60)
    assert job["status"] == "cancelled" and job["model_id"] is None
    assert job["progress"]["done"] < job["progress"]["total"]
    assert client.get("/models").json()["count"] == 0
    again = client.post(f"/jobs/{running}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "job_finished"
    assert wait_for_job(client, queued)["status"] == "cancelled"

"""A resnet18 model loads with the seed's own code, and the seed's two-key checkpoint imports.

ResNet-18's real ImageNet weights cannot be had offline, so a generated state dict sits in a
temporary torch hub cache under the official file name.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torchvision
from fastapi.testclient import TestClient
from torch import nn

from tests.conftest import image_bytes, make_settings, multipart
from vision_trainer.api.app import create_app


@pytest.fixture
def resnet_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    torch_home = tmp_path / "torch"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    with TestClient(create_app(make_settings(tmp_path / "data", augment_views=0))) as client:
        yield client


def test_resnet18_is_the_default_when_its_weights_are_cached(resnet_client) -> None:
    body = resnet_client.get("/").json()
    assert body["default_backbone"] == "resnet18"
    assert {b["name"]: b["pretrained_available"] for b in body["backbones"]}["resnet18"] is True


def test_checkpoint_loads_with_the_seed_code_and_the_seed_format_imports(resnet_client, colour_images) -> None:
    data, files = multipart(
        {"red": colour_images((220, 30, 30), 4), "blue": colour_images((30, 30, 220), 4)}, epochs="2", wait="true"
    )
    job = resnet_client.post("/train", data=data, files=files).json()
    assert job["status"] == "succeeded", job
    assert job["params"]["backbone"] == "resnet18" and job["log"][0].startswith("Backbone: resnet18")
    ck = torch.load(io.BytesIO(resnet_client.get(f"/models/{job['model_id']}/checkpoint").content), weights_only=True)

    # The seed's own loading code, verbatim.
    m = torchvision.models.resnet18()
    m.fc = nn.Linear(512, len(ck["class_names"]))
    m.load_state_dict(ck["model_state_dict"])

    seed_format = io.BytesIO()
    torch.save({"model_state_dict": m.state_dict(), "class_names": ck["class_names"]}, seed_format)
    imported = resnet_client.post(
        "/models/import", files={"file": ("trained_model.pth", seed_format.getvalue(), "application/octet-stream")}
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["backbone"] == "resnet18" and imported.json()["class_names"] == ["red", "blue"]
    photo = ("r.png", image_bytes((220, 30, 30), noise=20, seed=50), "image/png")
    ours = resnet_client.post("/predict", data={"model_id": job["model_id"]}, files={"file": photo}).json()
    theirs = resnet_client.post(
        "/predict", data={"model_id": imported.json()["model_id"]}, files={"file": photo}
    ).json()
    assert ours["prediction"] == theirs["prediction"]

    wrong_shape = {k: v for k, v in m.state_dict().items()}
    wrong_shape["fc.weight"] = torch.zeros(3, 512)
    buffer = io.BytesIO()
    torch.save({"model_state_dict": wrong_shape, "class_names": ["red", "blue"]}, buffer)
    refused = resnet_client.post(
        "/models/import", files={"file": ("bad.pth", buffer.getvalue(), "application/octet-stream")}
    )
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_checkpoint"

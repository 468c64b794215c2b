from __future__ import annotations

import importlib
import re

from fastapi import FastAPI

from vision_trainer.ml.runtime import RUNTIME_KINDS


def test_root_reports_backbones_and_the_offline_fallback(client) -> None:
    body = client.get("/").json()
    assert body["message"] and body["version"] and body["device"] == "cpu"
    assert body["runtime"] in RUNTIME_KINDS
    assert {b["name"]: b["pretrained_available"] for b in body["backbones"]} == {
        "resnet18": False,
        "efficientnet_lite0": True,
        "efficientnet_lite1": True,
        "efficientnet_lite2": True,
    }
    assert body["default_backbone"] == "efficientnet_lite0"
    assert "resnet18" in body["default_backbone_note"]


def test_health(client) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").json() == {"status": "ok"}


def test_readiness_fails_when_the_data_dir_is_gone(client, settings) -> None:
    import shutil

    shutil.rmtree(settings.data_dir)
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.json()["code"] == "not_ready"
    assert response.headers["retry-after"]


def test_openapi_documents_the_training_form(client) -> None:
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/train"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"label1", "files1", "label2", "files2", "epochs", "test_split", "wait"} <= set(form["properties"])
    assert {"/", "/jobs/{job_id}/events", "/models/{model_id}/checkpoint", "/predict"} <= set(spec["paths"])


def test_main_module_exposes_app_for_uvicorn(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VT_DATA_DIR", str(tmp_path))
    main = importlib.import_module("main")
    assert isinstance(main.app, FastAPI)


def test_metrics_in_prometheus_format(client) -> None:
    refused = client.post("/predict", files={"file": ("a.png", b"not an image", "image/png")})
    assert refused.status_code == 409 and refused.json()["code"] == "no_model"  # no model yet: checked first
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert f'vision_trainer_jobs{{status="{status}"}} 0.0' in text
    assert "vision_trainer_queue_depth 0.0" in text
    assert 'vision_trainer_training_duration_seconds_bucket{le="+Inf"} 0.0' in text
    assert 'vision_trainer_predict_latency_seconds_count{endpoint="predict"} 1.0' in text
    assert "vision_trainer_models_loaded 0.0" in text


def test_the_web_page_is_served_with_every_asset_local(client) -> None:
    assert client.get("/").json()["ui"] == "/ui"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for hook in (
        "add-class",
        "class-name-input",
        "class-files-input",
        "epochs-input",
        "train-button",
        "progress",
        "test-accuracy",
        "predict-file-input",
        "prediction-label",
    ):
        assert f'data-testid="{hook}"' in page.text, hook
    assets = re.findall(r'(?:src|href)="\./([^"]+)"', page.text)
    assert sorted(assets) == ["app.js", "style.css"]
    modules = ["app.js", "style.css", "api.js", "chart.js"]
    for name in modules:
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        # Offline: nothing is fetched from another host (the SVG namespace is a name, not a fetch).
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", response.text), name

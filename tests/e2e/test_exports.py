"""Every bundled export format, built by its export job for the session's cats-vs-dogs model, runs in its
own runtime here on real photos and answers as /predict does; Core ML, which cannot run on Linux, is
inspected; a converter that is not installed gives its 422."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo_files, photos, wait_for_job

pytestmark = pytest.mark.slow

RUNNABLE = ["tflite", "tflite-int8", "openvino", "onnx-int8"]


@pytest.fixture(scope="module")
def val_photos() -> list[tuple[str, bytes, str]]:
    return photo_files(
        photos("cats_dogs", "val", "cats", start=60, count=6) + photos("cats_dogs", "val", "dogs", start=60, count=6)
    )


def fetch_export(client: Any, model_id: str, fmt: str, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The 202 -> job -> 200 flow; the unpacked zip's metadata.json and folder."""
    url = f"/models/{model_id}/export"
    first = client.get(url, params={"format": fmt})
    if first.status_code == 202:
        body = first.json()
        assert body["status_url"] == f"/jobs/{body['job_id']}" and first.headers["Retry-After"]
        again = client.get(url, params={"format": fmt})  # while it is built: the same job, not a second one
        assert again.status_code == 200 or again.json()["job_id"] == body["job_id"]
        job = wait_for_job(client, body["job_id"], timeout=900)
        assert job["status"] == "succeeded", job
        assert job["kind"] == "export" and job["metrics"]["format"] == fmt and job["model_id"] is None
        first = client.get(url, params={"format": fmt})
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/zip"
    folder = tmp_path / fmt
    zipfile.ZipFile(io.BytesIO(first.content)).extractall(folder)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["format"] == fmt and metadata["class_names"] == ["cat", "dog"]
    assert {"input_size", "resize_size", "mean", "std", "temperature", "backbone"} <= set(metadata)
    assert "preprocess" in (folder / "README.txt").read_text() or fmt == "coreml"
    return metadata, folder


def preprocess(content: bytes, meta: dict[str, Any]) -> np.ndarray:
    """The README's preprocessing, written independently of the server's code (NCHW float32)."""
    image = Image.open(io.BytesIO(content)).convert("RGB")
    scale = meta["resize_size"] / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    size = meta["input_size"]
    left, top = (image.width - size) // 2, (image.height - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    return ((array - meta["mean"]) / meta["std"]).transpose(2, 0, 1).astype(np.float32)


def run_in_own_runtime(fmt: str, folder: Path, meta: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Logits of one preprocessed photo [1, 3, S, S], as the README tells a client to run it."""
    if fmt.startswith("tflite"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(folder / "model.tflite"))
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if fmt == "tflite-int8":
            q = meta["input_quantization"]
            x = np.clip(np.round(x / q["scale"]) + q["zero_point"], -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        logits = interpreter.get_tensor(out["index"])
        if "output_quantization" in meta:
            o = meta["output_quantization"]
            return (logits.astype(np.float32) - o["zero_point"]) * o["scale"]
        return logits
    if fmt == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled(x)[compiled.output(0)]
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_a_missing_converter_answers_422_naming_its_pip_command(live_client, cats_dogs_job, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "coremltools", None)  # `import coremltools` now raises ImportError
    response = live_client.get(f"/models/{cats_dogs_job['model_id']}/export", params={"format": "coreml"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "converter_unavailable" and body["pip"] == "pip install 'vision-trainer[coreml]'"
    assert body["pip"] in body["detail"]
    assert not any(job["kind"] == "export" for job in live_client.get("/jobs").json()["items"])


@pytest.mark.parametrize("fmt", RUNNABLE)
def test_an_export_runs_in_its_own_runtime_and_answers_as_predict(
    live_client, cats_dogs_job, val_photos, fmt, tmp_path
) -> None:
    model_id = cats_dogs_job["model_id"]
    meta, folder = fetch_export(live_client, model_id, fmt, tmp_path)
    check = meta["verification"]
    assert check["ran"] and check["photos"] >= 8 and check["latency_ms"] > 0
    if fmt.endswith("int8"):
        # int8: agreement and accuracy on the test photos next to the float model's, within a point
        assert meta["input_quantization"]["scale"] > 0
        assert check["top1_agreement"] >= 0.9 and check["server_accuracy"] - check["accuracy"] <= 0.01
    else:
        assert check["max_probability_difference"] <= 1e-4 and check["top1_agreement"] == 1.0
    agree = 0
    for photo in val_photos:
        logits = run_in_own_runtime(fmt, folder, meta, preprocess(photo[1], meta)[None])[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        served = live_client.post("/predict", data={"model_id": model_id}, files={"file": photo}).json()
        agree += meta["class_names"][int(probs.argmax())] == served["prediction"]
        if not fmt.endswith("int8"):  # the server decodes JPEGs downscaled: the same top-1, close confidences
            assert meta["class_names"][int(probs.argmax())] == served["prediction"]
            assert abs(float(probs.max()) - served["confidence"]) < 0.02
    assert agree >= len(val_photos) - 1


def test_a_coreml_export_is_converted_and_inspected_not_run(live_client, cats_dogs_job, tmp_path) -> None:
    meta, folder = fetch_export(live_client, cats_dogs_job["model_id"], "coreml", tmp_path)
    check = meta["verification"]
    assert check["ran"] is False and "Linux" in check["note"]
    assert check["input"] == {"name": "input", "shape": [1, 3, 224, 224], "dtype": "FLOAT32"}
    assert check["output"] == {"name": "logits", "shape": [1, 2], "dtype": "FLOAT32"}
    assert "vt.class_names" in check["metadata_checked"]
    assert (folder / "model.mlpackage" / "Manifest.json").is_file()
    assert "cannot run" in (folder / "README.txt").read_text()

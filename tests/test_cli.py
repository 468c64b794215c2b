"""The command line works on the data dir through the same services as the API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import photos

pytestmark = pytest.mark.slow


def run(args: list[str], data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VT_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "vision_trainer.cli", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def test_train_predict_models_and_export(tmp_path: Path) -> None:
    folder = tmp_path / "pets"
    for kind in ("cats", "dogs"):
        (folder / kind).mkdir(parents=True)
        for path in photos("cats_dogs", "train", kind, count=8):
            shutil.copy(path, folder / kind / path.name)
    data_dir = tmp_path / "data"

    trained = run(["train", str(folder), "--epochs", "3", "--augment-views", "0", "--backbone", "efficientnet_lite0"], data_dir)
    assert trained.returncode == 0, trained.stderr
    assert "Epoch 3/3 Loss:" in trained.stdout
    summary = json.loads(trained.stdout[trained.stdout.index("{"):])
    model_id = summary["model_id"]
    metrics = summary["metrics"]
    matrix = metrics["confusion_matrix"]
    assert metrics["test_count"] == sum(map(sum, matrix)) >= 2
    assert metrics["test_accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(2)) / metrics["test_count"])

    listing = run(["models"], data_dir)
    assert model_id in listing.stdout and "1 model(s)" in listing.stdout

    val = photos("cats_dogs", "val", "dogs", count=2)
    predicted = run(["predict", *map(str, val), "--model", model_id], data_dir)
    assert predicted.returncode == 0, predicted.stderr
    answers = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(answers) == 2
    for answer in answers:  # a 3-epoch model on 16 photos may still be wrong; its answer must be consistent
        assert {entry["label"] for entry in answer["top_k"]} == {"cats", "dogs"}
        assert answer["prediction"] == answer["top_k"][0]["label"]
        assert answer["confidence"] == answer["top_k"][0]["confidence"] >= 0.5

    out = tmp_path / "model.onnx"
    exported = run(["export", model_id, "--format", "onnx", "-o", str(out)], data_dir)
    assert exported.returncode == 0, exported.stderr
    assert out.stat().st_size > 1_000_000

    missing = run(["train", str(tmp_path / "nowhere")], data_dir)
    assert missing.returncode != 0 and "not a folder" in missing.stderr

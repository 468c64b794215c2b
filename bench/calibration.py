"""Does a confidence of 0.8 mean right 80 % of the time? The service's own models on photos they never saw.

    .venv/bin/python bench/calibration.py
    .venv/bin/python bench/calibration.py --tune top --datasets flowers5 eurosat_rgb   # tuned models

For cats_dogs and eurosat_rgb (trained on train/, judged on val/) and flowers5 (trained on 200 photos per
class, judged on the other 100 per class), through the service's training and prediction paths: accuracy,
mean confidence, their gap and the ECE (15 bins) on the unseen photos, with the fitted temperature
and without it (T = 1), and the cross-validated and test accuracies with the test interval.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, report

from vision_trainer.jobs.inline import CallerRunsQueue
from vision_trainer.ml.images import open_image
from vision_trainer.ml.metrics import expected_calibration_error
from vision_trainer.services import jobs, training
from vision_trainer.services.context import Services
from vision_trainer.services.prediction import load_predictor
from vision_trainer.services.uploads import Upload
from vision_trainer.services.work import runner
from vision_trainer.settings import Settings


def unseen_scores(services: Services, model_id: str, unseen: dict[str, list[Path]]) -> dict[str, Any]:
    predictor = load_predictor(services, model_id)
    probabilities, truth = [], []
    for label, paths in unseen.items():
        for start in range(0, len(paths), 32):
            images = [open_image(p, draft_size=predictor.resize_size) for p in paths[start : start + 32]]
            probabilities.append(predictor.probabilities(images).numpy())
            truth += [predictor.class_names.index(label)] * len(images)
    calibrated = np.concatenate(probabilities)
    # Undo the temperature to see what calibration changed: softmax(log p * T) is the T = 1 answer.
    raw = np.exp(np.log(np.clip(calibrated, 1e-12, None)) * predictor.temperature)
    raw /= raw.sum(axis=1, keepdims=True)
    rows = {}
    for name, probs in (("calibrated", calibrated), ("T=1", raw)):
        accuracy = float((probs.argmax(1) == np.array(truth)).mean())
        confidence = float(probs.max(1).mean())
        rows[name] = {
            "accuracy": accuracy,
            "mean_confidence": confidence,
            "gap": abs(confidence - accuracy),
            "ece": expected_calibration_error(probs, truth),
        }
    return {"photos": len(truth), "temperature": predictor.temperature, **rows}


def run(
    name: str, train: dict[str, list[Path]], unseen: dict[str, list[Path]], work: Path, tune: str
) -> list[dict[str, Any]]:
    services = Services.create(Settings(_env_file=None, data_dir=work / name))  # type: ignore[call-arg]
    files = [[Upload(p.name, p.open("rb")) for p in paths] for paths in train.values()]
    options = training.TrainRequest(epochs=10, backbone="efficientnet_lite0", tune=tune)
    job = training.submit_training(
        services, CallerRunsQueue(), training.TrainingUpload(labels=list(train), files=files, options=options)
    )
    assert runner.run_job(services, job["job_id"]) == "succeeded"
    for group in files:
        for upload in group:
            upload.stream.close()
    metrics = jobs.get_job(services, job["job_id"])["metrics"]
    scores = unseen_scores(services, jobs.get_job(services, job["job_id"])["model_id"], unseen)
    services.close()
    base = {
        "dataset": name,
        "unseen_photos": scores["photos"],
        "temperature": scores["temperature"],
        "test_accuracy": metrics["test_accuracy"],
        "test_ci": metrics["test_accuracy_ci"],
        "cv_accuracy": (metrics["cv_accuracy"] or {}).get("mean"),  # none for a tuned top
        "kept": (metrics.get("tuning") or {}).get("kept", "head"),
        "fitted_on": metrics["calibration"].get("fitted_on"),
    }
    return [
        {**base, "confidence": kind, **{k: round(v, 4) for k, v in scores[kind].items()}}
        for kind in ("T=1", "calibrated")
    ]


def splits(name: str) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(training photos, unseen photos) per class: train/ and val/, or flowers5's 200 and the rest."""
    if (DATASETS / name / "train").is_dir():
        return class_folders(DATASETS / name / "train"), class_folders(DATASETS / name / "val")
    every = class_folders(DATASETS / name)
    return {k: v[:200] for k, v in every.items()}, {k: v[200:] for k, v in every.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cats_dogs", "flowers5"])
    parser.add_argument("--tune", default="auto", choices=["head", "top", "auto"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            rows += run(name, *splits(name), Path(tmp), args.tune)
    report(f"calibration on unseen photos (tune={args.tune})", rows)


if __name__ == "__main__":
    main()

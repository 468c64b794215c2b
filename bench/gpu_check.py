"""The CUDA path end to end, for a machine that has a GPU (exits 2 without one).

    .venv/bin/python bench/gpu_check.py

Trains the same small cats-vs-dogs job through the service layer on the CPU (ONNX Runtime) and on
cuda:0 (PyTorch, AMP, pinned memory), then predicts the same validation photos with both models and
reports time, accuracy and how often the two agree. Prints JSON and a markdown table.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, report  # noqa: E402

from vision_trainer.jobs.inline import CallerRunsQueue  # noqa: E402
from vision_trainer.services import jobs, prediction, training  # noqa: E402
from vision_trainer.services.context import Services  # noqa: E402
from vision_trainer.services.uploads import Upload  # noqa: E402
from vision_trainer.services.work import runner  # noqa: E402
from vision_trainer.settings import Settings  # noqa: E402


def run(device: str, runtime: str, data_dir: Path, train: dict[str, list[Path]], val: list[Path]) -> dict[str, Any]:
    services = Services.create(Settings(_env_file=None, data_dir=data_dir, device=device, runtime=runtime))
    uploads = [[Upload(p.name, p.open("rb")) for p in paths] for paths in train.values()]
    start = time.perf_counter()
    job = training.submit_training(
        services,
        CallerRunsQueue(),
        training.TrainingUpload(
            labels=list(train), files=uploads, options=training.TrainRequest(epochs=5, backbone="efficientnet_lite0")
        ),
    )
    status = runner.run_job(services, job["job_id"])
    seconds = time.perf_counter() - start
    job = jobs.get_job(services, job["job_id"])
    answers = [prediction.predict_image(services, p.read_bytes(), model_id=job["model_id"]) for p in val]
    services.close()
    return {
        "device": device,
        "runtime": services.runtime.kind,
        "status": status,
        "seconds": seconds,
        "test_accuracy": job["metrics"]["test_accuracy"],
        "answers": answers,
    }


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to check", file=sys.stderr)
        sys.exit(2)
    train = {k: v[:60] for k, v in class_folders(DATASETS / "cats_dogs" / "train").items()}
    val_sets = class_folders(DATASETS / "cats_dogs" / "val")
    val = [p for paths in val_sets.values() for p in paths[:25]]
    truth = [label for label, paths in val_sets.items() for _ in paths[:25]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            run("cpu", "auto", Path(tmp) / "cpu", train, val),
            run("cuda:0", "auto", Path(tmp) / "gpu", train, val),
        ]
    for result in results:
        hits = sum(a["prediction"] == t for a, t in zip(result["answers"], truth))
        rows.append(
            {
                "device": result["device"],
                "runtime": result["runtime"],
                "status": result["status"],
                "seconds": result["seconds"],
                "test_accuracy": result["test_accuracy"],
                "val_accuracy": hits / len(truth),
            }
        )
    agree = sum(a["prediction"] == b["prediction"] for a, b in zip(results[0]["answers"], results[1]["answers"]))
    report(
        "gpu_check: the same job on the CPU and on CUDA",
        rows,
        {"GPU": torch.cuda.get_device_name(0), "predictions that agree": f"{agree}/{len(val)}"},
    )
    if any(r["status"] != "succeeded" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

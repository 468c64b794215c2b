"""The CUDA path end to end, for a machine that has a GPU (exits 2 without one).

    .venv/bin/python bench/gpu_check.py

Trains the same small cats-vs-dogs job through the service layer on the CPU (ONNX Runtime) and on
cuda:0 (PyTorch, AMP, pinned memory), at each tuning depth (``tune=head``, ``top`` on cached activations,
``full`` end to end; the last two in mixed precision on CUDA), then predicts the same validation photos
with each model and reports time, accuracy and how often the CPU's and the GPU's answers agree. Prints
JSON and a markdown table. ``--tunes head top`` skips the slow CPU end-to-end row.
"""

from __future__ import annotations

import argparse
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


def run(
    device: str, runtime: str, data_dir: Path, train: dict[str, list[Path]], val: list[Path], tune: str
) -> dict[str, Any]:
    services = Services.create(Settings(_env_file=None, data_dir=data_dir, device=device, runtime=runtime))
    uploads = [[Upload(p.name, p.open("rb")) for p in paths] for paths in train.values()]
    start = time.perf_counter()
    job = training.submit_training(
        services,
        CallerRunsQueue(),
        training.TrainingUpload(
            labels=list(train),
            files=uploads,
            options=training.TrainRequest(epochs=5, backbone="efficientnet_lite0", tune=tune),
        ),
    )
    status = runner.run_job(services, job["job_id"])
    seconds = time.perf_counter() - start
    job = jobs.get_job(services, job["job_id"])
    answers = [prediction.predict_image(services, p.read_bytes(), model_id=job["model_id"]) for p in val]
    services.close()
    return {
        "device": device,
        "tune": tune,
        "runtime": services.runtime.kind,
        "status": status,
        "seconds": seconds,
        "test_accuracy": job["metrics"]["test_accuracy"],
        "answers": answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tunes", nargs="+", default=["head", "top", "full"], choices=["head", "top", "full"])
    args = parser.parse_args()
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
            run(device, "auto", Path(tmp) / f"{device}-{tune}", train, val, tune)
            for tune in args.tunes
            for device in ("cpu", "cuda:0")
        ]
    for result in results:
        hits = sum(a["prediction"] == t for a, t in zip(result["answers"], truth))
        rows.append(
            {
                "device": result["device"],
                "tune": result["tune"],
                "runtime": result["runtime"],
                "status": result["status"],
                "seconds": result["seconds"],
                "test_accuracy": result["test_accuracy"],
                "val_accuracy": hits / len(truth),
            }
        )
    agree = {
        tune: f"{sum(a['prediction'] == b['prediction'] for a, b in zip(cpu['answers'], gpu['answers']))}/{len(val)}"
        for tune, cpu, gpu in zip(args.tunes, results[::2], results[1::2])
    }
    report(
        "gpu_check: the same job on the CPU and on CUDA, by tuning depth",
        rows,
        {"GPU": torch.cuda.get_device_name(0), "predictions that agree (CPU vs CUDA)": agree},
    )
    if any(r["status"] != "succeeded" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

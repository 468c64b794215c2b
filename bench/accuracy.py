"""Held-out accuracy of the service's own training path on photos near and far from ImageNet, side by side.

    .venv/bin/python bench/accuracy.py                       # cats_dogs, flowers5, eurosat_rgb
    .venv/bin/python bench/accuracy.py --datasets eurosat_rgb --epochs 10

For each dataset, one ``POST /train``-equivalent job per row (store the photos, run the job, save the
model), then the model answers the held-out photos through the serving path (``Predictor``, as
``/predict`` does): ``val/`` where the dataset has one, else every fourth photo of each class, kept out
of training. Rows: the head on the final features only (``depth=final``, what training did before
features from several depths) and the head on the final features with the pooled stages the backbone's
registry entry names (``depth=stages``, the default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, held_out_accuracy, report, train_in_process  # noqa: E402

from vision_trainer.ml.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vision_trainer.ml.predictor import Predictor  # noqa: E402
from vision_trainer.services import models, training  # noqa: E402
from vision_trainer.services.context import Services  # noqa: E402
from vision_trainer.settings import Settings  # noqa: E402

Photos = dict[str, list[Path]]


def held_out(name: str) -> tuple[Photos, Photos]:
    """``(training photos, held-out photos)`` per class."""
    root = DATASETS / name
    if (root / "train").is_dir():
        return class_folders(root / "train"), class_folders(root / "val")
    every = class_folders(root)
    return (
        {label: [p for i, p in enumerate(paths) if i % 4] for label, paths in every.items()},
        {label: paths[::4] for label, paths in every.items()},
    )


def run(train: Photos, val: Photos, options: training.TrainRequest, folder: Path) -> dict[str, Any]:
    services = Services.create(Settings(_env_file=None, data_dir=folder / "data", cache_dir=folder / "cache"))
    try:
        seconds, job = train_in_process(services, train, options)
        checkpoint = folder / "trained_model.pth"
        save_checkpoint(checkpoint, models.model_checkpoint(services, job["model_id"]))
        started = time.perf_counter()
        predictor = Predictor.from_checkpoint(load_checkpoint(checkpoint), runtime=services.runtime)
        held = held_out_accuracy(predictor, val)
        metrics = job["metrics"]
        return {
            "held_out_accuracy": round(held, 4),
            "test_accuracy": metrics["test_accuracy"],
            "cv_accuracy": (metrics.get("cv_accuracy") or {}).get("mean"),
            "seconds": round(seconds, 2),
            "images_through_backbone": metrics["images_through_backbone"],
            "held_out_seconds": round(time.perf_counter() - started, 2),
        }
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cats_dogs", "flowers5", "eurosat_rgb"])
    parser.add_argument("--epochs", type=int, default=5, help="5: what a request that names none gets")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        train, val = held_out(name)
        for depth in ("final", "stages"):
            options = training.TrainRequest(epochs=args.epochs, backbone=args.backbone, depth=depth)
            with tempfile.TemporaryDirectory(prefix="vt-accuracy-") as folder:
                row = run(train, val, options, Path(folder))
            rows.append({"dataset": name, "depth": depth, **row})
            print(rows[-1], file=sys.stderr, flush=True)
    report(
        f"Held-out accuracy by feature depth ({args.backbone}, {args.epochs} epochs, default augmented views)",
        rows,
    )


if __name__ == "__main__":
    main()

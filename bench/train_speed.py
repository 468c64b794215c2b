"""Time to a saved model: the seed's naive loop vs the service's training path, side by side.

    .venv/bin/python bench/train_speed.py            # cats_dogs/train, 10 epochs, efficientnet_lite0

Reports seconds, images pushed through the backbone, test accuracy and accuracy on a separate
validation set for: naive (bench/naive_seed.py), ours at several augmented-view counts (the
service layer: submit + run a job, exactly what POST /train does), and the ceiling (our backbone
image count divided by the best raw backbone throughput, at each runtime's own batch size, on random tensors).
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
from common import DATASETS, class_folders, held_out_accuracy, report, train_in_process  # noqa: E402
from naive_seed import train_and_evaluate_model  # noqa: E402

from vision_trainer.ml.backbones import create_backbone, freeze, resolve_backbone  # noqa: E402
from vision_trainer.ml.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vision_trainer.ml.data import LabelledImage, stratified_split  # noqa: E402
from vision_trainer.ml.predictor import Predictor  # noqa: E402
from vision_trainer.ml.runtime import OnnxExtractor, RuntimeOptions, TorchExtractor, build_extractor  # noqa: E402
from vision_trainer.services import models, training  # noqa: E402
from vision_trainer.services.context import Services  # noqa: E402
from vision_trainer.settings import Settings  # noqa: E402


def ours(
    data: dict[str, list[Path]], *, epochs: int, backbone: str, views: int, workers: int, runtime: str, data_dir: Path
) -> dict[str, Any]:
    """The service's own path: store + validate the upload, then run the job to a saved model."""
    services = Services.create(
        Settings(
            _env_file=None, data_dir=data_dir, num_workers=workers, runtime=runtime, cache_dir=data_dir.parent / "cache"
        )
    )
    options = training.TrainRequest(epochs=epochs, backbone=backbone, augment_views=views)
    seconds, finished = train_in_process(services, data, options)
    checkpoint = data_dir / "trained_model.pth"
    save_checkpoint(checkpoint, models.model_checkpoint(services, finished["model_id"]))
    services.close()
    return {
        "seconds": seconds,
        "images_through_backbone": finished["metrics"]["images_through_backbone"],
        "test_accuracy": finished["metrics"]["test_accuracy"],
        "checkpoint": checkpoint,
    }


def naive(data: dict[str, list[Path]], *, epochs: int, backbone: str, save_to: Path) -> dict[str, Any]:
    items = [LabelledImage(p, label, p.name) for label, paths in enumerate(data.values()) for p in paths]
    split = stratified_split(items, test_fraction=0.2, seed=0)  # the service's own split
    start = time.perf_counter()
    result = train_and_evaluate_model(
        resolve_backbone(backbone),
        [(i.path, i.label) for i in split.train],
        [(i.path, i.label) for i in split.test],
        list(data),
        epochs,
        save_to,
    )
    return {"seconds": time.perf_counter() - start, **result, "checkpoint": save_to}


def val_accuracy(checkpoint_path: Path, val: dict[str, list[Path]], runtime: RuntimeOptions) -> float:
    """Accuracy on photos neither run saw, through the serving path (Predictor)."""
    return held_out_accuracy(Predictor.from_checkpoint(load_checkpoint(checkpoint_path), runtime=runtime), val)


def raw_throughput(backbone: str, cache_dir: Path, seconds: float = 8.0) -> dict[str, float]:
    """Images/s of the bare backbone at each runtime's own batch size, on random tensors."""
    spec = resolve_backbone(backbone)
    module = freeze(create_backbone(spec, num_classes=None, pretrained=True))
    results = {}
    for kind in ("onnx", "torch"):
        extractor = build_extractor(
            module, name=spec.name, input_size=spec.input_size, options=RuntimeOptions(kind, cache_dir=cache_dir)
        )  # type: ignore[arg-type]
        batch = torch.randn(extractor.batch_size, 3, spec.input_size, spec.input_size)
        extractor(batch)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            extractor(batch)
            count += len(batch)
        results[kind] = count / (time.perf_counter() - start)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATASETS / "cats_dogs" / "train")
    parser.add_argument("--val", type=Path, default=DATASETS / "cats_dogs" / "val")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--views", default="0,1,2,4", help="augmented-view counts to run ours with")
    parser.add_argument("--workers", default="0", help="DataLoader worker counts to run ours with")
    parser.add_argument("--runtime", default="auto", choices=["auto", "onnx", "torch"])
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    data, val = class_folders(args.data), class_folders(args.val)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        serving = RuntimeOptions("onnx", cache_dir=root / "cache")
        throughput = raw_throughput(args.backbone, root / "cache")
        # One untimed job exports the ONNX backbone, which every later job on the machine reuses.
        warm_start = time.perf_counter()
        ours(data, epochs=1, backbone=args.backbone, views=0, workers=0, runtime=args.runtime, data_dir=root / "warm")
        first_job = time.perf_counter() - warm_start
        if not args.skip_naive:
            result = naive(data, epochs=args.epochs, backbone=args.backbone, save_to=root / "naive.pth")
            rows.append(
                {
                    "run": "naive (seed loop)",
                    "seconds": result["seconds"],
                    "images_through_backbone": result["images_through_backbone"],
                    "test_accuracy": result["test_accuracy"],
                    "val_accuracy": val_accuracy(result["checkpoint"], val, serving),
                }
            )
        for workers in [int(w) for w in args.workers.split(",")]:
            for views in [int(v) for v in args.views.split(",")]:
                result = ours(
                    data,
                    epochs=args.epochs,
                    backbone=args.backbone,
                    views=views,
                    workers=workers,
                    runtime=args.runtime,
                    data_dir=root / f"ours-{views}-{workers}",
                )
                rows.append(
                    {
                        "run": f"ours, augment_views={views}, num_workers={workers}",
                        "seconds": result["seconds"],
                        "images_through_backbone": result["images_through_backbone"],
                        "test_accuracy": result["test_accuracy"],
                        "val_accuracy": val_accuracy(result["checkpoint"], val, serving),
                    }
                )
                best = max(throughput.values())
                rows.append(
                    {
                        "run": f"ceiling for augment_views={views}",
                        "seconds": result["images_through_backbone"] / best,
                        "images_through_backbone": result["images_through_backbone"],
                    }
                )
    naive_seconds = rows[0]["seconds"] if not args.skip_naive else None
    for row in rows:
        if naive_seconds and row["run"].startswith("ours"):
            row["speedup_vs_naive"] = naive_seconds / row["seconds"]
    report(
        f"train_speed: {args.data.name} ({sum(len(v) for v in data.values())} images), {args.epochs} epochs, "
        f"{args.backbone}",
        rows,
        {
            f"raw backbone images/s (ONNX Runtime at batch {OnnxExtractor.batch_size}, PyTorch at {TorchExtractor.batch_size})": {
                k: round(v, 1) for k, v in throughput.items()
            },
            "first job on a fresh machine, 1 epoch, incl. one-time ONNX export (s)": round(first_job, 1),
        },
    )


if __name__ == "__main__":
    main()

"""Held-out accuracy of the service's own training path on photos near and far from ImageNet, side by side.

    .venv/bin/python bench/accuracy.py                       # cats_dogs, flowers5, eurosat_rgb
    .venv/bin/python bench/accuracy.py --datasets eurosat_rgb --epochs 10

For each dataset, one ``POST /train``-equivalent job per row (store the photos, run the job, save the
model), then the model answers the held-out photos through the serving path (``Predictor``, as
``/predict`` does): ``val/`` where the dataset has one, else every fourth photo of each class, kept out
of training. Rows:

- ``final/head``: the head on the final features only (what training did before features from several
  depths);
- ``stages/head``: the head on the final features with the pooled stages the backbone's registry entry
  names (``depth=stages``; the default before tuning, and ``tune=head`` today);
- ``stages/top``: the backbone's layers above its first cut point tuned with a new head on cached
  activations of the frozen trunk (``tune=top``);
- ``stages/auto``: what a request that names nothing gets (``tune=auto``);
- ``full`` (only with ``--rows full``): the service's ``tune=full``, ``--reference-epochs`` epochs;
- ``end-to-end``: the reference, the whole network fine-tuned the way fine-tuning tools do (AdamW with a
  cosine schedule, fresh augmentation every epoch, ``--reference-epochs`` epochs) on the same 80 % of the
  training photos a job trains on (every fifth photo of each class left out, as the service's 20 % test
  split), in this script and not in the service (``--no-reference`` skips it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, held_out_accuracy, report, train_in_process  # noqa: E402

from vision_trainer.ml.backbones import create_backbone, resolve_backbone  # noqa: E402
from vision_trainer.ml.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vision_trainer.ml.data import eval_transform, train_transform  # noqa: E402
from vision_trainer.ml.images import open_image  # noqa: E402
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
            "kept": (metrics.get("tuning") or {}).get("kept", "head"),
        }
    finally:
        services.close()


class Photographs(Dataset[tuple[torch.Tensor, int]]):
    """``(path, label)`` pairs through a transform, decoded afresh every epoch (fresh augmentation)."""

    def __init__(self, items: list[tuple[Path, int]], transform: Any, draft_size: int) -> None:
        self.items, self.transform, self.draft_size = items, transform, draft_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return self.transform(open_image(path, draft_size=self.draft_size)), label


def end_to_end(train: Photos, val: Photos, backbone: str, epochs: int) -> dict[str, Any]:
    """The reference: every layer of the pretrained backbone and a new head trained together."""
    spec = resolve_backbone(backbone)
    preprocessing = spec.preprocessing()
    names = list(train)
    items = [(p, c) for c, name in enumerate(names) for i, p in enumerate(train[name]) if i % 5]
    draft = int(preprocessing["resize_size"])
    torch.manual_seed(0)
    loader = DataLoader(
        Photographs(items, train_transform(preprocessing), draft), batch_size=32, shuffle=True, num_workers=1
    )
    model = create_backbone(spec, num_classes=len(names), pretrained=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"end-to-end epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    held = [(p, c) for c, name in enumerate(names) for p in val[name]]
    model.eval()
    hits = 0
    with torch.inference_mode():
        for x, y in DataLoader(Photographs(held, eval_transform(preprocessing), draft), batch_size=64):
            hits += int((model(x).argmax(1) == y).sum())
    return {
        "held_out_accuracy": round(hits / len(held), 4),
        "test_accuracy": None,
        "cv_accuracy": None,
        "seconds": round(seconds, 2),
        "images_through_backbone": epochs * len(items),
        "kept": "end-to-end",
    }


ROWS = {
    "final/head": {"depth": "final", "tune": "head"},
    "stages/head": {"depth": "stages", "tune": "head"},
    "stages/top": {"depth": "stages", "tune": "top"},
    "stages/auto (default)": {"depth": "stages", "tune": "auto"},
    "full": {"tune": "full"},  # the service's own end-to-end path, --reference-epochs epochs; not by default
}
DEFAULT_ROWS = [name for name in ROWS if name != "full"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cats_dogs", "flowers5", "eurosat_rgb"])
    parser.add_argument("--epochs", type=int, default=5, help="5: what a request that names none gets")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=DEFAULT_ROWS)
    parser.add_argument("--reference-epochs", type=int, default=10)
    parser.add_argument("--no-reference", action="store_true", help="skip the end-to-end reference")
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        train, val = held_out(name)
        for label in args.rows:
            extra = {"tune_epochs": args.reference_epochs} if label == "full" else {}
            options = training.TrainRequest(epochs=args.epochs, backbone=args.backbone, **ROWS[label], **extra)
            with tempfile.TemporaryDirectory(prefix="vt-accuracy-") as folder:
                row = run(train, val, options, Path(folder))
            rows.append({"dataset": name, "run": label, **row})
            print(rows[-1], file=sys.stderr, flush=True)
        if not args.no_reference:
            row = end_to_end(train, val, args.backbone, args.reference_epochs)
            rows.append({"dataset": name, "run": f"end-to-end, {args.reference_epochs} epochs", **row})
            print(rows[-1], file=sys.stderr, flush=True)
    report(
        f"Held-out accuracy by feature depth and tuning ({args.backbone}, {args.epochs} epochs, "
        "default augmented views)",
        rows,
    )


if __name__ == "__main__":
    main()

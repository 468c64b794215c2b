"""Where backbone forwards run on this CPU, side by side in one run: ONNX Runtime float32 (the default
before), OpenVINO float32, OpenVINO bf16, ONNX Runtime int8 (static, calibrated on training photos) and
PyTorch float32 / bf16 (bf16 only where the CPU has AVX-512 BF16 or AMX).

    .venv/bin/python bench/runtimes.py                 # efficientnet_lite0 on cats_dogs train/ and val/

Per runtime: batch-1 and batch-8 latency of the backbone, extraction throughput over the training
photos, accuracy on the held-out val/ photos of a linear head trained on that runtime's own features
(the same head recipe for all), how far its features are from float32 ONNX Runtime's, and the
in-process /predict path (decode + resize + forward + head) for one photo.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, report  # noqa: E402

from vision_trainer.ml.backbones import pretrained_backbone, resolve_backbone  # noqa: E402
from vision_trainer.ml.converters import quantize_onnx  # noqa: E402
from vision_trainer.ml.data import Normalizer, plain_view  # noqa: E402
from vision_trainer.ml.images import open_image  # noqa: E402
from vision_trainer.ml.runtime import (  # noqa: E402
    FeatureExtractor,
    OnnxExtractor,
    RuntimeOptions,
    build_extractor,
    cpu_has_bf16,
    runtime_available,
)

CALIBRATION = 64


class TorchBf16:
    """PyTorch on the CPU under bfloat16 autocast (oneDNN's AVX-512 BF16 kernels)."""

    batch_size = 16

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module.eval().to(memory_format=torch.channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return self.module(images.contiguous(memory_format=torch.channels_last)).float()


def extractors(backbone: torch.nn.Module, spec: Any, cache: Path, calibration: torch.Tensor) -> dict[str, Any]:
    """Name -> a function building the extractor (so each is built only when measured)."""

    def kind(name: str) -> Callable[[], FeatureExtractor]:
        options = RuntimeOptions(name, cache_dir=cache)  # type: ignore[arg-type]
        return lambda: build_extractor(backbone, name=spec.name, input_size=spec.input_size, options=options)

    def int8() -> FeatureExtractor:
        source = build_extractor(
            backbone, name=spec.name, input_size=spec.input_size, options=RuntimeOptions("onnx", cache_dir=cache)
        )
        target = cache / "int8.onnx"
        quantize_onnx(source.path, target, calibration)  # type: ignore[union-attr]
        return OnnxExtractor(target)

    found: dict[str, Any] = {"onnxruntime fp32": kind("onnx")}
    if runtime_available("openvino"):
        found["openvino fp32"] = kind("openvino")
        if cpu_has_bf16():
            found["openvino bf16"] = kind("openvino-bf16")
    found["onnxruntime int8"] = int8
    found["torch fp32"] = kind("torch")
    if cpu_has_bf16():
        found["torch bf16"] = lambda: TorchBf16(backbone)
    return found


def latency(extractor: FeatureExtractor, batch: torch.Tensor, runs: int) -> float:
    extractor(batch)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        extractor(batch)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def features(extractor: FeatureExtractor, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = torch.cat([extractor(images[i : i + 8]) for i in range(0, len(images), 8)])
    return out.float(), time.perf_counter() - start


def head_accuracy(train: torch.Tensor, y_train: torch.Tensor, val: torch.Tensor, y_val: torch.Tensor) -> float:
    """A linear head trained the same way on every runtime's features (standardized, full-batch SGD)."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    head = torch.nn.Linear(train.shape[1], int(y_train.max()) + 1)
    torch.manual_seed(0)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    x = (train - mean) / std
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head(x), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return float((head((val - mean) / std).argmax(1) == y_val).float().mean())


def predict_path(
    extractor: FeatureExtractor, head: torch.nn.Linear, photos: list[bytes], prep: dict[str, Any], runs: int
) -> float:
    """Median seconds of the in-process /predict work for one photo: decode, resize + crop, normalize,
    forward, head and softmax."""
    view, normalize = plain_view(prep), Normalizer(prep)
    timings = []
    for i in range(runs + 3):
        start = time.perf_counter()
        image = open_image(photos[i % len(photos)], draft_size=int(prep["resize_size"]))
        batch = normalize(view(image)[None])
        with torch.inference_mode():
            torch.softmax(head(extractor(batch).float()), 1)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings[3:])


def load(paths: list[Path], prep: dict[str, Any]) -> torch.Tensor:
    view, normalize = plain_view(prep), Normalizer(prep)
    return normalize(torch.stack([view(open_image(p, draft_size=int(prep["resize_size"]))) for p in paths]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--runs", type=int, default=40, help="timed batch-1 runs (batch 8: a quarter)")
    parser.add_argument("--dataset", default="cats_dogs", help="a datasets folder with train/ and val/")
    parser.add_argument("--per-class", type=int, default=0, help="at most this many photos per class (0: all)")
    parser.add_argument("--runtimes", default="", help="comma-separated names to measure (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = resolve_backbone(args.backbone)
    prep = spec.preprocessing()
    limit = args.per_class or None
    train_folders = {k: v[:limit] for k, v in class_folders(DATASETS / args.dataset / "train").items()}
    val_folders = {k: v[:limit] for k, v in class_folders(DATASETS / args.dataset / "val").items()}
    train_paths = [p for paths in train_folders.values() for p in paths]
    val_paths = [p for paths in val_folders.values() for p in paths]
    y_train = torch.tensor([c for c, paths in enumerate(train_folders.values()) for _ in paths])
    y_val = torch.tensor([c for c, paths in enumerate(val_folders.values()) for _ in paths])
    x_train, x_val = load(train_paths, prep), load(val_paths, prep)
    calibration = x_train[:: max(1, len(x_train) // CALIBRATION)][:CALIBRATION]
    photos = [p.read_bytes() for p in val_paths[:40]]
    backbone = pretrained_backbone(spec)
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    with tempfile.TemporaryDirectory() as tmp:
        chosen = set(args.runtimes.split(",")) if args.runtimes else None
        for name, build in extractors(backbone, spec, Path(tmp), calibration).items():
            if chosen is not None and name not in chosen:
                continue
            extractor = build()
            one, eight = latency(extractor, x_val[:1], args.runs), latency(extractor, x_val[:8], args.runs // 4)
            f_train, seconds = features(extractor, x_train)
            f_val, _ = features(extractor, x_val)
            reference = f_train if reference is None else reference
            gap = float(((f_train - reference).norm(dim=1) / reference.norm(dim=1)).max())
            accuracy = head_accuracy(f_train, y_train, f_val, y_val)
            head = torch.nn.Linear(f_train.shape[1], len(train_folders))
            rows.append(
                {
                    "runtime": name,
                    "batch 1 ms": round(one * 1000, 2),
                    "batch 8 ms": round(eight * 1000, 1),
                    "images/s (extraction)": round(len(x_train) / seconds, 1),
                    "val accuracy": round(accuracy, 4),
                    "feature gap vs ORT fp32": round(gap, 4),
                    "predict path ms": round(predict_path(extractor, head, photos, prep, args.runs) * 1000, 2),
                }
            )
            print(rows[-1], file=sys.stderr)
    report(
        f"runtimes: {spec.name}, {args.dataset} ({len(train_paths)} train / {len(val_paths)} val photos)",
        rows,
        {"cpu has bf16": cpu_has_bf16()},
    )


if __name__ == "__main__":
    main()

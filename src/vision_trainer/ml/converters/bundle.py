"""Build one export as a zip: convert the model's full torch module, run the result in its own runtime on
the model's test photos against the PyTorch model (or inspect it where its runtime does not exist here),
and pack the model file(s) with ``metadata.json`` and a ``README.txt``."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import MLError
from ..exports import TOLERANCE, ExportError, export_metadata, scaled_model
from ..metrics import softmax
from . import ConversionInput, Converter, Progress, require_converter

# An int8 export that answers more than this fraction of the test photos wrong beyond the float model is refused.
MAX_ACCURACY_LOSS = 0.01
LATENCY_RUNS = 10


class ExportRefusedError(MLError, ValueError):
    """An int8 export lost more accuracy than allowed; ``figures`` holds the verification figures."""

    code = "export_refused"

    def __init__(self, message: str, figures: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.figures = dict(figures)


@dataclass(frozen=True)
class CheckPhotos:
    """Normalized photos ``[N, 3, S, S]`` to compare the export with the server on, and their class
    indices (None when they have no labels, e.g. generated images for a model without stored photos)."""

    images: torch.Tensor
    labels: list[int] | None = None


def build_bundle(
    checkpoint: Mapping[str, Any],
    fmt: str,
    target: Path,
    *,
    calibration: torch.Tensor,
    check: CheckPhotos,
    progress: Progress,
) -> dict[str, Any]:
    """Convert, verify and pack ``checkpoint`` as ``fmt`` into the zip ``target`` (written atomically).

    Args:
        calibration: Normalized training photos for the int8 formats' ranges (ignored by float formats).
        check: The photos the export is compared with the PyTorch model on.
        progress: Called with (phase, done, total) while converting, calibrating and verifying.

    Returns:
        The bundle's ``metadata.json`` (with ``verification``: the figures of the comparison).

    Raises:
        ConverterUnavailableError: the format's package is not installed.
        ExportError: a float export disagrees with the PyTorch model, or an inspected one does not match it.
        ExportRefusedError: an int8 export lost more than one point of accuracy on the test photos.
    """
    converter = require_converter(fmt)
    model = scaled_model(checkpoint)  # the model's full torch module: backbone, head and temperature
    props = export_metadata(checkpoint)
    size = int(checkpoint["preprocessing"]["input_size"])
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as tmp:
        folder = Path(tmp) / "files"
        folder.mkdir()
        extra = converter.convert(model, folder, ConversionInput(size, props, calibration), progress)
        metadata = bundle_metadata(checkpoint, converter, extra)
        progress("verifying", 0, 1)
        metadata["verification"] = verify_bundle(converter, folder, model, metadata, props, check)
        progress("verifying", 1, 1)
        (folder / "metadata.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
        (folder / "README.txt").write_text(converter.readme(metadata))
        packed = Path(tmp) / "bundle.zip"
        write_zip(folder, packed)
        os.replace(packed, target)
    return metadata


def bundle_metadata(checkpoint: Mapping[str, Any], converter: Converter, extra: Mapping[str, Any]) -> dict[str, Any]:
    prep = checkpoint["preprocessing"]
    size = int(prep["input_size"])
    classes = list(checkpoint["class_names"])
    # Only LiteRT's full-integer program takes (and may give) int8 tensors; ONNX int8 keeps float ones.
    int8_in = converter.name == "tflite-int8"
    int8_out = int8_in and "output_quantization" in extra
    return {
        "format": converter.name,
        "description": converter.description,
        "class_names": classes,
        "input_size": size,
        "resize_size": int(prep["resize_size"]),
        "mean": [float(v) for v in prep["mean"]],
        "std": [float(v) for v in prep["std"]],
        "temperature": float(checkpoint.get("temperature") or 1.0),
        "backbone": checkpoint["backbone"],
        "input": {
            "name": "input",
            "layout": "NCHW",
            "shape": [1, 3, size, size],
            "dtype": "int8" if int8_in else "float32",
        },
        "output": {
            "name": "logits",
            "dtype": "int8" if int8_out else "float32",
            "shape": [1, len(classes)],
            "meaning": "temperature-scaled logits; softmax gives /predict's confidences",
        },
        **extra,
    }


def verify_bundle(
    converter: Converter,
    folder: Path,
    model: nn.Module,
    metadata: Mapping[str, Any],
    props: Mapping[str, str],
    check: CheckPhotos,
) -> dict[str, Any]:
    """The export against the PyTorch model on ``check``: float formats within ``TOLERANCE`` in probability
    with the same top-1; int8 formats report top-1 agreement and accuracy beside the server's."""
    if not converter.runs_here:
        inspected = converter.inspect(folder, {**metadata, "props": props})
        return {
            "ran": False,
            "photos": 0,
            "note": "its runtime does not exist on Linux: inspected, not run",
            **inspected,
        }
    with torch.inference_mode():
        reference = softmax(model(check.images).double().numpy())
    run = converter.open(folder, metadata)
    batch = check.images.numpy()
    exported = softmax(run(batch).astype(np.float64))
    figures: dict[str, Any] = {
        "ran": True,
        "photos": len(batch),
        "max_probability_difference": float(np.abs(reference - exported).max()),
        "top1_agreement": float((reference.argmax(1) == exported.argmax(1)).mean()),
        "latency_ms": round(_latency(run, batch[:1]) * 1000, 2),
    }
    if check.labels is not None:
        labels = np.asarray(check.labels)
        figures["accuracy"] = float((exported.argmax(1) == labels).mean())
        figures["server_accuracy"] = float((reference.argmax(1) == labels).mean())
    _judge(converter, figures)
    return figures


def _judge(converter: Converter, figures: Mapping[str, Any]) -> None:
    if not converter.quantized:
        gap = figures["max_probability_difference"]
        if gap > TOLERANCE or figures["top1_agreement"] < 1:
            raise ExportError(
                f"the {converter.name} export disagrees with the PyTorch model (max probability difference "
                f"{gap:.2e}, allowed {TOLERANCE:.0e}; top-1 agreement {figures['top1_agreement']:.3f}); it was not kept"
            )
        return
    if "accuracy" in figures and figures["server_accuracy"] - figures["accuracy"] > MAX_ACCURACY_LOSS + 1e-9:
        raise ExportRefusedError(
            f"the {converter.name} export answers {figures['accuracy']:.3f} of the {figures['photos']} test photos "
            f"right where the model answers {figures['server_accuracy']:.3f} (top-1 agreement "
            f"{figures['top1_agreement']:.3f}): more than {MAX_ACCURACY_LOSS * 100:.0f} point lost, so it is not "
            "served; the float formats keep the model's accuracy",
            figures,
        )


def _latency(run: Callable[[np.ndarray], np.ndarray], one: np.ndarray) -> float:
    """Median seconds of one batch-1 forward in the export's runtime (after a warm-up)."""
    run(one)
    timings = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        run(one)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def write_zip(folder: Path, target: Path) -> None:
    """Every file under ``folder`` at its relative path (a model.mlpackage stays a folder inside the zip)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())

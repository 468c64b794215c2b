"""Whole-model exports (backbone + head + temperature) to ONNX and TorchScript, with the metadata a
client needs to preprocess images exactly as the server does, checked against PyTorch."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from .classifier import classifier_module
from .data import Normalizer, plain_view
from .errors import MLError
from .metrics import softmax
from .runtime import export_onnx

ExportFormat = Literal["onnx", "torchscript"]
TOLERANCE = 1e-4


class ExportError(MLError, RuntimeError):
    code = "export_failed"


class TemperatureScaled(nn.Module):
    """``model(x) / temperature``: softmax of the output gives the confidences the server reports."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def export_metadata(checkpoint: Mapping[str, Any]) -> dict[str, str]:
    """``vt.*`` properties: class names, mean, std (JSON lists), input and resize size, backbone."""
    prep = checkpoint["preprocessing"]
    return {
        "vt.class_names": json.dumps(list(checkpoint["class_names"]), ensure_ascii=False),
        "vt.mean": json.dumps(list(prep["mean"])),
        "vt.std": json.dumps(list(prep["std"])),
        "vt.input_size": str(int(prep["input_size"])),
        "vt.resize_size": str(int(prep["resize_size"])),
        "vt.backbone": checkpoint["backbone"],
        "vt.temperature": str(float(checkpoint.get("temperature") or 1.0)),
    }


def scaled_model(checkpoint: Mapping[str, Any]) -> TemperatureScaled:
    """The whole model (its pooled stages included, ``ml.classifier``) with the temperature applied."""
    return TemperatureScaled(classifier_module(checkpoint), float(checkpoint.get("temperature") or 1.0)).eval()


def export_model(checkpoint: Mapping[str, Any], path: Path, fmt: ExportFormat) -> None:
    """Write the export of ``checkpoint`` to ``path`` (atomically)."""
    model = scaled_model(checkpoint)
    metadata = export_metadata(checkpoint)
    size = int(checkpoint["preprocessing"]["input_size"])
    if fmt == "onnx":
        export_onnx(model, path, input_size=size, output_name="logits", metadata=metadata)
        return
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still what users ask for
            traced = torch.jit.trace(model, torch.zeros(1, 3, size, size))
            torch.jit.save(traced, tmp_name, _extra_files={k: v.encode() for k, v in metadata.items()})
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def run_export(path: Path, fmt: ExportFormat, batch: torch.Tensor) -> np.ndarray:
    """Logits of an exported file on a normalized batch, with onnxruntime or TorchScript."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return module(batch).numpy()


def verify_export(checkpoint: Mapping[str, Any], path: Path, fmt: ExportFormat, images: Sequence[Image.Image]) -> float:
    """Compare the export with the PyTorch model on ``images``.

    Returns:
        The largest probability difference.

    Raises:
        ExportError: a difference above 1e-4 or a different top-1.
    """
    prep = checkpoint["preprocessing"]
    view = plain_view(prep)
    batch = Normalizer(prep)(torch.stack([view(image) for image in images]))
    with torch.inference_mode():
        reference = softmax(scaled_model(checkpoint)(batch).double().numpy())
    exported = softmax(run_export(path, fmt, batch).astype(np.float64))
    gap = float(np.abs(reference - exported).max())
    if gap > TOLERANCE or (reference.argmax(1) != exported.argmax(1)).any():
        raise ExportError(
            f"the {fmt} export disagrees with the PyTorch model (max probability difference {gap:.2e}, "
            f"allowed {TOLERANCE:.0e}); it was not kept"
        )
    return gap


def generated_images(count: int = 4, size: int = 256) -> list[Image.Image]:
    """Deterministic noise images for checking exports of models that have no stored photos."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]

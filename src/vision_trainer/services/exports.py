"""Model exports: built once per model and format, checked against PyTorch before they are kept."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..ml.exports import ExportFormat, export_model, generated_images, verify_export
from ..ml.images import open_image
from .context import Services
from .models import get_model, model_checkpoint, stored_test_images

FILE_NAMES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
CHECK_IMAGES = 16


def export_file(services: Services, model_id: str, fmt: ExportFormat) -> Path:
    """The model as one ONNX or TorchScript file (backbone + head + temperature, with metadata).

    Raises:
        NotFound: no such model.
        ExportError: the export disagrees with the PyTorch model; nothing is kept.
    """
    get_model(services, model_id)
    target = services.files.model_dir(model_id) / FILE_NAMES[fmt]
    if target.is_file():
        return target
    checkpoint = model_checkpoint(services, model_id)
    stored = stored_test_images(services, model_id, CHECK_IMAGES)
    images = [open_image(path) for path in stored] or generated_images()
    unverified = target.with_name(f".unverified-{uuid.uuid4().hex}-{target.name}")
    try:
        export_model(checkpoint, unverified, fmt)
        verify_export(checkpoint, unverified, fmt, images)
        os.replace(unverified, target)
    finally:
        unverified.unlink(missing_ok=True)
    return target

"""Model exports, built once per model and format and checked before they are kept.

ONNX and TorchScript are single files built in the request (as they always were). The other formats
(``ml.converters``: LiteRT, OpenVINO, ONNX int8, Core ML) convert for seconds to minutes, so they are
built by an ``export`` job: the first request queues it, later ones follow it, and once the zip is
cached under the model's folder every request gets it at once.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..ml.converters import list_converters, require_converter, resolve_converter
from ..ml.converters.bundle import CheckPhotos, ExportRefusedError, build_bundle
from ..ml.data import Normalizer, plain_view
from ..ml.exports import ExportFormat, export_model, generated_images, verify_export
from ..ml.images import open_image
from . import jobs
from .context import Services
from .errors import InvalidRequest, NotFound
from .models import get_model, model_checkpoint, model_image, stored_test_images
from .queue import JobQueue
from .submit import queue_job

FILE_NAMES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
CHECK_IMAGES = 16
# Bundled formats are compared on up to this many test photos (int8 accuracy needs more than 16)
# and int8 ones calibrated on up to this many training photos.
BUNDLE_CHECK_PHOTOS = 64
CALIBRATION_PHOTOS = 64
BundleFormat = Literal["tflite", "tflite-int8", "openvino", "onnx-int8", "coreml"]
BUNDLE_FORMATS: tuple[str, ...] = tuple(list_converters())
_requests_lock = threading.Lock()


class ExportRefused(InvalidRequest):
    """An int8 export lost more than a point of accuracy (HTTP 422 with its figures)."""

    code = "export_refused"

    def __init__(self, detail: str, figures: dict[str, Any]) -> None:
        super().__init__(detail)
        self.figures = figures


class ExportParams(BaseModel):
    """What an ``export`` job converts: one model into one bundled format."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    format: BundleFormat


@dataclass(frozen=True)
class ExportState:
    """Where a bundled export stands: ``path`` once it is cached, else the ``job`` building it."""

    path: Path | None = None
    job: dict[str, Any] | None = None


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


def bundle_path(services: Services, model_id: str, fmt: str) -> Path:
    """Where the verified zip of ``fmt`` is cached (removed with the model)."""
    return services.files.model_dir(model_id) / "exports" / f"{fmt}.zip"


def request_export(services: Services, queue: JobQueue, model_id: str, fmt: str) -> ExportState:
    """The cached zip of a bundled format, or the export job building it (queued by the first request).

    Raises:
        NotFound: no such model.
        ConverterUnavailableError: the format's optional package is not installed (422 naming the pip command).
        ExportRefused: an earlier export of this int8 format lost more than a point of accuracy.
        InvalidRequest: an int8 format for a model with no stored training photos (``no_calibration_photos``).
    """
    model = get_model(services, model_id)
    path = bundle_path(services, model_id, fmt)
    if path.is_file():
        return ExportState(path=path)
    _raise_refusal(path)
    converter = require_converter(fmt)
    if converter.quantized and not model["data"].get("train_image_ids"):
        raise InvalidRequest(
            f"the {fmt} export is calibrated on the model's training photos, and model {model_id} has none stored "
            "(imported models and models of deleted datasets); export a float format instead",
            code="no_calibration_photos",
        )
    with _requests_lock:
        running = _running_job(services, path)
        if running is not None:
            return ExportState(job=running)
        job = queue_job(services, queue, kind="export", params=ExportParams(model_id=model_id, format=fmt))
        _marker(path).write_text(job["job_id"])
        return ExportState(job=job)


def build_export(services: Services, params: ExportParams, progress: Callable[[str, int, int], None]) -> dict[str, Any]:
    """Convert, verify and cache one bundled export (what an ``export`` job does).

    Returns:
        The bundle's metadata, with its ``verification`` figures.

    Raises:
        ExportRefusedError: an int8 export lost more than a point of accuracy; the refusal is kept, so the
            next request answers it without converting again.
        ExportError, ConverterUnavailableError: as ``ml.converters.bundle.build_bundle``.
    """
    checkpoint = model_checkpoint(services, params.model_id)
    converter = resolve_converter(params.format)
    prep = checkpoint["preprocessing"]
    calibration = _photos(services, params.model_id, prep, _training_ids(services, params.model_id))
    check = _check_photos(services, params.model_id, prep, list(checkpoint["class_names"]))
    path = bundle_path(services, params.model_id, params.format)
    try:
        return build_bundle(
            checkpoint,
            params.format,
            path,
            calibration=calibration if converter.quantized else calibration[:0],
            check=check,
            progress=progress,
        )
    except ExportRefusedError as exc:
        _refusal(path).write_text(json.dumps({"detail": str(exc), "verification": exc.figures}))
        raise


def _training_ids(services: Services, model_id: str) -> list[str]:
    ids = list(get_model(services, model_id)["data"].get("train_image_ids", []))
    step = max(1, len(ids) // CALIBRATION_PHOTOS)  # spread over the classes, which come in order
    return ids[::step][:CALIBRATION_PHOTOS]


def _check_photos(services: Services, model_id: str, prep: dict[str, Any], class_names: list[str]) -> CheckPhotos:
    listed = get_model(services, model_id)["data"].get("test_images", [])[:BUNDLE_CHECK_PHOTOS]
    kept = [item for item in listed if item.get("label") in class_names and _has_image(services, model_id, item)]
    if not kept:
        view, normalize = plain_view(prep), Normalizer(prep)
        return CheckPhotos(normalize(torch.stack([view(image) for image in generated_images()])))
    images = _photos(services, model_id, prep, [item["image_id"] for item in kept])
    return CheckPhotos(images, [class_names.index(item["label"]) for item in kept])


def _has_image(services: Services, model_id: str, item: dict[str, Any]) -> bool:
    try:
        model_image(services, model_id, item["image_id"])
    except NotFound:
        return False
    return True


def _photos(services: Services, model_id: str, prep: dict[str, Any], image_ids: list[str]) -> torch.Tensor:
    view, normalize = plain_view(prep), Normalizer(prep)
    size = int(prep["input_size"])
    if not image_ids:
        return torch.zeros(0, 3, size, size)
    decoded = [
        view(open_image(model_image(services, model_id, i), draft_size=int(prep["resize_size"]))) for i in image_ids
    ]
    return normalize(torch.stack(decoded))


def _running_job(services: Services, path: Path) -> dict[str, Any] | None:
    """The export job named by the format's marker while it is queued or running (None once it ended)."""
    marker = _marker(path)
    if not marker.is_file():
        return None
    try:
        job = jobs.get_job(services, marker.read_text().strip())
    except NotFound:
        return None
    return None if job["status"] in jobs.FINAL_STATUSES else job


def _raise_refusal(path: Path) -> None:
    refusal = _refusal(path)
    if refusal.is_file():
        stored = json.loads(refusal.read_text())
        raise ExportRefused(stored["detail"], stored["verification"])


def _marker(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_suffix(".job")


def _refusal(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_suffix(".refused.json")

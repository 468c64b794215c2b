"""Model registry: list, inspect, rename, delete, default alias, checkpoint, images, report, export, import."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from ...ml.converters import ConverterUnavailableError
from ...ml.images import sniff_format
from ...services import exports, models, report
from ...services.errors import InvalidRequest
from ..answers import job_answer
from ..cache import shared_answer
from ..deps import LimitQuery, OffsetQuery, QueueDep, ServicesDep, SettingsDep
from ..errors import error_response
from ..form_fields import multipart_form
from ..multipart import FormLimits, StreamedForm, WholeFormRoute, streamed_form
from ..schemas import ERROR_RESPONSES, DefaultModelSet, JobAccepted, ModelList, ModelPublic, ModelRename, ModelSummary
from ..uploads import check_upload_room

router = APIRouter(prefix="/models", tags=["models"], route_class=WholeFormRoute)

EXTENSIONS = {"onnx": "onnx", "torchscript": "pt"}
ExportFormatName = Literal["onnx", "torchscript", "tflite", "tflite-int8", "openvino", "onnx-int8", "coreml"]


@router.get("", response_model=ModelList, summary="List trained models, newest first")
async def list_models(request: Request, services: ServicesDep, limit: LimitQuery = 50, offset: OffsetQuery = 0) -> Any:
    """Requests arriving together share one answer, at most a second old and recomputed after any change."""
    return await shared_answer(
        request,
        ("models", limit, offset),
        lambda: run_in_threadpool(models.list_models, services, limit=limit, offset=offset),
    )


@router.get("/default", response_model=ModelSummary, responses=ERROR_RESPONSES, summary="The default model")
async def get_default(services: ServicesDep) -> Any:
    """404 `no_default` when no default is set (then /predict uses the newest model)."""
    return await run_in_threadpool(models.get_default_model, services)


@router.put("/default", response_model=ModelSummary, responses=ERROR_RESPONSES, summary="Set the default model")
async def set_default(body: DefaultModelSet, services: ServicesDep) -> Any:
    return await run_in_threadpool(models.set_default_model, services, body.model_id)


IMPORT_TEXT_FIELDS = ("name", "backbone")
IMPORT_FILE_FIELDS = ("file",)
IMPORT_FORM_SCHEMA = multipart_form(
    {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "A trained_model.pth: ours, or the seed's {model_state_dict, class_names}.",
        },
        "name": {"type": "string", "maxLength": 200, "description": "Name of the model."},
        "backbone": {
            "type": "string",
            "maxLength": 64,
            "description": "Backbone when the file names none (default resnet18).",
        },
    },
    required_fields=("file",),
)


def _text_field(form: StreamedForm, name: str, max_length: int) -> str | None:
    value = form.fields.get(name)
    if value is not None and len(value) > max_length:
        raise InvalidRequest(f"{name}: at most {max_length} characters (got {len(value)})", code="invalid_parameter")
    return value or None


@router.post(
    "/import",
    status_code=201,
    response_model=ModelPublic,
    responses=ERROR_RESPONSES,
    openapi_extra=IMPORT_FORM_SCHEMA,
    summary="Register a trained_model.pth made elsewhere",
)
async def import_model(request: Request, services: ServicesDep, settings: SettingsDep) -> Any:
    """Fields: `file`, optional `name` and `backbone`. The file is streamed to the data dir, never held
    in memory; over VT_MAX_FILE_MB it is refused with 413 `file_too_large` without reading the rest.
    Read with `weights_only=True`; a file that is not a checkpoint, or a pickle that carries code, is
    refused (422 `invalid_checkpoint`), as are weights that do not fit the backbone. Registered with
    `metrics: null`. 507 `storage_full`, before the file is read, over VT_MAX_DATA_MB."""
    await check_upload_room(request, services)
    limits = FormLimits(
        max_file_bytes=settings.max_file_bytes,
        max_field_bytes=settings.max_field_kb * 1024,
        max_fields=settings.max_fields,
        max_files=len(IMPORT_FILE_FIELDS),
    )
    async with streamed_form(
        request,
        text_fields=IMPORT_TEXT_FIELDS,
        file_fields=IMPORT_FILE_FIELDS,
        file_dir=services.files.inside("models"),
        limits=limits,
    ) as form:
        upload = form.files.get("file")
        if upload is None:
            raise InvalidRequest("file: a trained_model.pth upload is required", code="invalid_parameter")
        return await run_in_threadpool(
            models.import_model,
            services,
            upload.path,
            filename=upload.filename,
            name=_text_field(form, "name", 200),
            backbone=_text_field(form, "backbone", 64),
        )


@router.get("/{model_id}", response_model=ModelPublic, responses=ERROR_RESPONSES, summary="One model")
async def get_model(model_id: str, services: ServicesDep) -> Any:
    """Name, classes, backbone, training parameters, data summary, per-epoch history and the evaluation
    report (`metrics`: test accuracy, per-class precision/recall/F1, confusion matrix, misclassified
    test images, calibration)."""
    return await run_in_threadpool(models.get_model, services, model_id)


@router.patch("/{model_id}", response_model=ModelPublic, responses=ERROR_RESPONSES, summary="Rename a model")
async def rename_model(model_id: str, body: ModelRename, services: ServicesDep) -> Any:
    return await run_in_threadpool(models.rename_model, services, model_id, body.name)


@router.delete("/{model_id}", status_code=204, responses=ERROR_RESPONSES, summary="Delete a model")
async def delete_model(model_id: str, services: ServicesDep) -> Response:
    """Files and row are removed, the in-memory copy dropped, a default alias pointing at it cleared."""
    await run_in_threadpool(models.delete_model, services, model_id)
    return Response(status_code=204)


@router.get(
    "/{model_id}/checkpoint",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **ERROR_RESPONSES},
    summary="Download trained_model.pth",
)
async def download_checkpoint(model_id: str, services: ServicesDep) -> FileResponse:
    """The full model (backbone and head) in the seed's format; a model that stores only its head gets
    it assembled with the shared backbone's weights for this download."""
    path, temporary = await run_in_threadpool(models.checkpoint_file, services, model_id)
    cleanup = BackgroundTask(path.unlink, missing_ok=True) if temporary else None
    return FileResponse(path, media_type="application/octet-stream", filename="trained_model.pth", background=cleanup)


@router.get(
    "/{model_id}/images/{image_id}",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}, **ERROR_RESPONSES},
    summary="A stored training or test image (e.g. a misclassified one)",
)
async def model_image(model_id: str, image_id: str, services: ServicesDep) -> FileResponse:
    path = await run_in_threadpool(models.model_image, services, model_id, image_id)
    return FileResponse(path, media_type=_image_type(path.read_bytes()[:16]))


@router.get(
    "/{model_id}/report.png",
    responses={200: {"content": {"image/png": {}}}, **ERROR_RESPONSES},
    summary="Accuracy/loss per epoch and the confusion matrix as a picture",
)
async def report_png(model_id: str, services: ServicesDep) -> Response:
    return Response(await run_in_threadpool(report.report_png, services, model_id), media_type="image/png")


@router.get(
    "/{model_id}/export",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}, "application/zip": {}},
            "description": "onnx, torchscript: the file. Other formats: the verified zip, once it is built.",
        },
        202: {
            "model": JobAccepted,
            "description": "The export job building the zip (queued by this request or an earlier one); follow it "
            "at status_url and ask again when it succeeded.",
        },
        **ERROR_RESPONSES,
    },
    summary="The whole model as ONNX or TorchScript, or as a verified LiteRT, OpenVINO, ONNX int8 or Core ML zip",
)
async def export_model(
    model_id: str,
    services: ServicesDep,
    queue: QueueDep,
    format: ExportFormatName = Query("onnx"),  # noqa: A002
) -> Response:
    """Output: temperature-scaled logits (softmax gives /predict's confidences).

    `onnx`, `torchscript`: one file with a dynamic batch axis, built in the request. Metadata (`vt.class_names`,
    `vt.mean`, `vt.std`, `vt.input_size`, `vt.resize_size`, `vt.backbone`, `vt.temperature`) in ONNX metadata
    props or TorchScript `_extra_files`. Checked against PyTorch before it is served.

    `tflite`, `tflite-int8`, `openvino`, `onnx-int8`, `coreml`: a zip of the model file(s), `metadata.json`
    (class names, preprocessing, temperature, backbone, the int8 input's scale and zero point, and the
    verification figures) and `README.txt` (how to run it). Built by an `export` job: the first request answers
    202 with the job, `GET /jobs/{job_id}` follows it, and the same request answers 200 with the zip once the
    job succeeded (cached per model and format). Each is run in its own runtime on the model's test photos
    against the server first (Core ML, which cannot run on Linux, is inspected instead); an int8 zip losing
    more than one point of accuracy is refused: 422 `export_refused` with `verification`. A format whose
    converter is not installed answers 422 `converter_unavailable` with the `pip` command that installs it."""
    if format == "onnx" or format == "torchscript":
        path = await run_in_threadpool(exports.export_file, services, model_id, format)
        return FileResponse(
            path, media_type="application/octet-stream", filename=f"model-{model_id}.{EXTENSIONS[format]}"
        )
    try:
        state = await run_in_threadpool(exports.request_export, services, queue, model_id, format)
    except exports.ExportRefused as exc:
        return error_response(422, exc.detail, exc.code, verification=exc.figures)
    except ConverterUnavailableError as exc:
        return error_response(422, str(exc), exc.code, pip=exc.pip)
    if state.path is not None:
        return FileResponse(state.path, media_type="application/zip", filename=f"model-{model_id}-{format}.zip")
    assert state.job is not None
    answer = await job_answer(services, state.job, wait=False)
    answer.headers["Retry-After"] = "2"
    return answer


def _image_type(header: bytes) -> str:
    return f"image/{(sniff_format(header) or 'octet-stream').lower()}"

"""POST /predict (one image) and POST /predict/batch (many)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from ...services import prediction
from ...services.errors import InvalidRequest, PayloadTooLarge, Unavailable
from ..deps import ServicesDep
from ..form_fields import known_form_fields
from ..multipart import WholeFormRoute
from ..schemas import ERROR_RESPONSES, BatchPredictionPublic, PredictionPublic

router = APIRouter(tags=["prediction"], route_class=WholeFormRoute)

ModelIdField = Annotated[str | None, Form(description="Model to use; default: the default alias, else the newest.")]
TopKField = Annotated[int | None, Form(ge=1, description="Ranked labels to return; default min(5, classes), clamped.")]
MinConfidenceField = Annotated[
    float, Form(ge=0.0, le=1.0, description='Below this top confidence the prediction is "unknown".')
]
RejectNovelField = Annotated[
    bool | None,
    Form(
        description='Answer "unknown" for photos unlike every training photo (novelty.novel); '
        "default: the server's VT_REJECT_NOVEL (off unless set)."
    ),
]
ExplainField = Annotated[
    bool, Form(description="Add a heatmap of where the model looked (class activation map of the predicted label).")
]


@contextmanager
def prediction_slot(request: Request) -> Iterator[None]:
    """Bound the predictions in flight (VT_MAX_INFLIGHT_PREDICTIONS): beyond it, 503 instead of queueing."""
    slots = request.app.state.predict_slots
    if not slots.acquire(blocking=False):
        raise Unavailable("too many predictions in flight; retry shortly", code="busy")
    try:
        yield
    finally:
        slots.release()


def check_size(file: UploadFile, max_bytes: int) -> None:
    if file.size is not None and file.size > max_bytes:
        raise PayloadTooLarge(
            f"{file.filename!r} is larger than {max_bytes / 2**20:g} MiB (VT_MAX_FILE_MB)", code="file_too_large"
        )


async def read_limited(file: UploadFile, max_bytes: int) -> bytes:
    check_size(file, max_bytes)
    return await file.read()


OPTION_FIELDS = ("model_id", "top_k", "min_confidence", "reject_novel", "explain")


@router.post(
    "/predict",
    response_model=PredictionPublic,
    responses=ERROR_RESPONSES,
    summary="Classify one image",
    dependencies=[Depends(known_form_fields("file", *OPTION_FIELDS))],
)
async def predict(
    request: Request,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="The image to classify.")],
    model_id: ModelIdField = None,
    top_k: TopKField = None,
    min_confidence: MinConfidenceField = 0.0,
    reject_novel: RejectNovelField = None,
    explain: ExplainField = False,
) -> Any:
    """Answers `prediction` and `confidence` (the seed's names; temperature-calibrated) plus `model_id`,
    `top_k` and `novelty` (`{score, threshold, novel}`, or null with `novelty_note`); with `explain=true`
    a `heatmap`. 409 `no_model` before any model exists; 415/413/422 for files that are not usable
    images; 503 `busy` when VT_MAX_INFLIGHT_PREDICTIONS predictions are already running."""
    with prediction_slot(request), request.app.state.metrics.timed_prediction("predict"):
        data = await read_limited(file, services.settings.max_file_bytes)
        return await run_in_threadpool(
            prediction.predict_image,
            services,
            data,
            model_id=model_id or None,
            top_k=top_k,
            min_confidence=min_confidence,
            reject_novel=reject_novel,
            explain=explain,
        )


@router.post(
    "/predict/batch",
    response_model=BatchPredictionPublic,
    responses=ERROR_RESPONSES,
    summary="Classify many images in one request",
    dependencies=[Depends(known_form_fields("files", *OPTION_FIELDS))],
)
async def predict_batch(
    request: Request,
    services: ServicesDep,
    files: Annotated[list[UploadFile], File(description="The images (at most VT_MAX_BATCH_FILES).")],
    model_id: ModelIdField = None,
    top_k: TopKField = None,
    min_confidence: MinConfidenceField = 0.0,
    reject_novel: RejectNovelField = None,
    explain: ExplainField = False,
) -> Any:
    """One entry per file, in order; a file that is not a usable image gets `error: {code, detail}`
    in its place without failing the others."""
    limit = services.settings.max_batch_files
    if len(files) > limit:
        raise InvalidRequest(
            f"{len(files)} files; at most {limit} per batch (VT_MAX_BATCH_FILES)", code="too_many_files"
        )
    with prediction_slot(request), request.app.state.metrics.timed_prediction("batch"):
        max_bytes = services.settings.max_file_bytes
        for f in files:  # sizes from the parsed form; the contents are read one by one as the model gets to them
            check_size(f, max_bytes)
        contents = [(f.filename or "", f.file) for f in files]
        return await run_in_threadpool(
            prediction.predict_batch,
            services,
            contents,
            model_id=model_id or None,
            top_k=top_k,
            min_confidence=min_confidence,
            reject_novel=reject_novel,
            explain=explain,
        )

"""Prediction: resolve the model, keep it in memory (small LRU), decode the image, top-k."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from PIL import Image

from ..ml.checkpoint import load_checkpoint, load_head_checkpoint
from ..ml.errors import InvalidImageError
from ..ml.images import PixelBudget, open_image
from ..ml.predictor import Predictor
from ..store import repository as repo
from .errors import Conflict, NotFound
from .models import shared_backbone
from .uploads import RESERVED_LABEL as UNKNOWN_LABEL

if TYPE_CHECKING:
    from .context import Services


def resolve_model_id(services: Services, model_id: str | None) -> str:
    """The model a prediction uses: the one named, else the ``default`` alias, else the newest.

    Raises:
        NotFound: the named model does not exist.
        Conflict: no model exists yet (``no_model``).
    """
    with services.db.session() as session:
        if model_id:
            if repo.get_model(session, model_id=model_id) is None:
                raise NotFound(f"no model with id {model_id!r}; GET /models lists them")
            return model_id
        default = repo.get_alias(session, name=repo.DEFAULT_ALIAS)
        if default is not None:
            return default
        newest = repo.newest_model(session)
        if newest is None:
            raise Conflict("no trained model yet: POST /train first and wait for the job to succeed", code="no_model")
        return newest.id


def load_predictor(services: Services, model_id: str) -> Predictor:
    def load() -> Predictor:
        head = services.files.head_path(model_id)
        if head.is_file():  # a stored head on the shared backbone
            stored = load_head_checkpoint(head)
            return Predictor.from_head(stored, shared_backbone(services, stored), runtime=services.runtime)
        checkpoint = load_checkpoint(services.files.checkpoint_path(model_id))
        return Predictor.from_checkpoint(checkpoint, runtime=services.runtime)

    return services.predictors.get(model_id, load)


def _answer(ranked: list[tuple[str, float]], min_confidence: float) -> dict[str, Any]:
    label, confidence = ranked[0]
    return {
        "prediction": label if confidence >= min_confidence else UNKNOWN_LABEL,
        "confidence": round(confidence, 6),
        "top_k": [{"label": name, "confidence": round(p, 6)} for name, p in ranked],
    }


def _decode(
    services: Services, predictor: Predictor, data: bytes | BinaryIO, budget: PixelBudget | None = None
) -> Image.Image:
    if not isinstance(data, bytes):
        data.seek(0)
        data = data.read()
    return open_image(
        data,
        max_pixels=services.settings.max_image_pixels,
        draft_size=predictor.resize_size,
        max_aspect=services.settings.max_aspect_ratio,
        budget=budget,
    )


def _top_k(predictor: Predictor, top_k: int | None) -> int:
    return top_k if top_k is not None else min(5, len(predictor.class_names))


def predict_image(
    services: Services,
    data: bytes,
    *,
    model_id: str | None = None,
    top_k: int | None = None,
    min_confidence: float = 0.0,
) -> dict[str, Any]:
    """Classify one encoded image.

    Returns:
        ``{prediction, confidence, model_id, top_k: [{label, confidence}]}``; ``prediction`` is
        ``"unknown"`` when the top confidence is below ``min_confidence``.

    Raises:
        NotFound, Conflict: see ``resolve_model_id``.
        InvalidImageError: the bytes are not a usable image.
    """
    resolved = resolve_model_id(services, model_id)
    predictor = load_predictor(services, resolved)
    image = _decode(services, predictor, data, PixelBudget(services.settings.max_request_pixels))
    ranked = predictor.predict([image], top_k=_top_k(predictor, top_k))[0]
    return {**_answer(ranked, min_confidence), "model_id": resolved}


def predict_batch(
    services: Services,
    files: Sequence[tuple[str, bytes | BinaryIO]],
    *,
    model_id: str | None = None,
    top_k: int | None = None,
    min_confidence: float = 0.0,
) -> dict[str, Any]:
    """Classify many images; a bad file gets an ``error`` entry in its place.

    The photos stream through the model: each is read and decoded (shrunk to what the model needs)
    only when its turn comes, at most one forward batch of them is held at a time, and all of them
    together may decode at most VT_MAX_REQUEST_PIXELS pixels (the rest get ``image_too_large``).

    Args:
        files: ``(filename, content)``: the encoded bytes, or a seekable binary stream of them.
    """
    resolved = resolve_model_id(services, model_id)
    predictor = load_predictor(services, resolved)
    budget = PixelBudget(services.settings.max_request_pixels)
    k = _top_k(predictor, top_k)
    entries: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Image.Image]] = []

    def flush() -> None:
        if pending:
            for (entry, _), ranked in zip(pending, predictor.predict([image for _, image in pending], top_k=k)):
                entry.update(_answer(ranked, min_confidence))
            pending.clear()

    for filename, data in files:
        entry: dict[str, Any] = {"filename": filename}
        entries.append(entry)
        try:
            pending.append((entry, _decode(services, predictor, data, budget)))
        except InvalidImageError as exc:
            entry["error"] = {"code": exc.code, "detail": f"{filename!r}: {exc}"}
        if len(pending) >= predictor.extractor.batch_size:
            flush()
    flush()
    return {"model_id": resolved, "predictions": entries}

"""Prediction: resolve the model, keep it in memory (small LRU), decode the image, top-k."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..ml.checkpoint import load_checkpoint, load_head_checkpoint
from ..ml.errors import InvalidImageError
from ..ml.images import open_image
from ..ml.predictor import Predictor
from ..store import repository as repo
from .errors import Conflict, NotFound
from .models import shared_backbone
from .uploads import RESERVED_LABEL as UNKNOWN_LABEL

if TYPE_CHECKING:
    from PIL import Image

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


def _decode(services: Services, predictor: Predictor, data: bytes) -> Image.Image:
    return open_image(data, max_pixels=services.settings.max_image_pixels, draft_size=predictor.resize_size)


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
    ranked = predictor.predict([_decode(services, predictor, data)], top_k=_top_k(predictor, top_k))[0]
    return {**_answer(ranked, min_confidence), "model_id": resolved}


def predict_batch(
    services: Services,
    files: list[tuple[str, bytes]],
    *,
    model_id: str | None = None,
    top_k: int | None = None,
    min_confidence: float = 0.0,
) -> dict[str, Any]:
    """Classify many images in one forward pass; a bad file gets an ``error`` entry in its place."""
    resolved = resolve_model_id(services, model_id)
    predictor = load_predictor(services, resolved)
    entries: list[dict[str, Any]] = []
    images = []
    for filename, data in files:
        try:
            images.append(_decode(services, predictor, data))
            entries.append({"filename": filename})
        except InvalidImageError as exc:
            entries.append({"filename": filename, "error": {"code": exc.code, "detail": f"{filename!r}: {exc}"}})
    ranked = iter(predictor.predict(images, top_k=_top_k(predictor, top_k)) if images else [])
    predictions = [
        entry if "error" in entry else {**entry, **_answer(next(ranked), min_confidence)} for entry in entries
    ]
    return {"model_id": resolved, "predictions": predictions}

"""Prediction: resolve the model, keep it in memory (small LRU), decode the image, top-k; with each answer
the photo's novelty (how unlike the training photos it is) and, when asked, where the model looked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from ..ml.cam import render_heatmap, uploaded_size
from ..ml.checkpoint import load_checkpoint, load_head_checkpoint
from ..ml.errors import InvalidImageError
from ..ml.images import PixelBudget, open_image
from ..ml.predictor import Predictor
from ..store import repository as repo
from .errors import Conflict, NotFound
from .models import shared_backbone
from .novelty import load_novelty, novelty_answer
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
    """The model in memory (loaded once, kept in the LRU), with its novelty reference or why it has none."""

    def load() -> Predictor:
        head = services.files.head_path(model_id)
        if head.is_file():  # a stored head on the shared backbone
            stored = load_head_checkpoint(head)
            predictor = Predictor.from_head(stored, shared_backbone(services, stored), runtime=services.runtime)
        else:
            stored = load_checkpoint(services.files.checkpoint_path(model_id))
            predictor = Predictor.from_checkpoint(stored, runtime=services.runtime)
        # The reference's width is checked against the features themselves when they come (a head may read
        # only the first columns of what the extractor gives).
        predictor.novelty, predictor.novelty_note = load_novelty(stored, None)
        return predictor

    return services.predictors.get(model_id, load)


@dataclass(frozen=True)
class Options:
    """What a request asks beyond the image: ranked labels, the confidence floor, whether novel photos
    answer ``unknown`` and whether to return a heatmap."""

    top_k: int | None = None
    min_confidence: float = 0.0
    reject_novel: bool | None = None  # None: the server's VT_REJECT_NOVEL
    explain: bool = False


def _answer(
    ranked: list[tuple[str, float]], min_confidence: float, novelty: dict[str, Any] | None, reject_novel: bool
) -> dict[str, Any]:
    label, confidence = ranked[0]
    novel = bool(novelty and novelty["novel"])
    return {
        "prediction": label if confidence >= min_confidence and not (reject_novel and novel) else UNKNOWN_LABEL,
        "confidence": round(confidence, 6),
        "top_k": [{"label": name, "confidence": round(p, 6)} for name, p in ranked],
        "novelty": novelty,
    }


def _ranked(predictor: Predictor, probabilities: Any, k: int) -> list[list[tuple[str, float]]]:
    k = max(1, min(k, len(predictor.class_names)))
    values, indices = probabilities.topk(k, dim=1)
    return [
        [(predictor.class_names[i], float(v)) for v, i in zip(row_v.tolist(), row_i.tolist())]
        for row_v, row_i in zip(values, indices)
    ]


def _answers(
    services: Services,
    predictor: Predictor,
    images: Sequence[Image.Image],
    uploads: Sequence[bytes],
    options: Options,
) -> list[dict[str, Any]]:
    """One answer per decoded image (``uploads`` are their encoded bytes, for the heatmap's box)."""
    if options.explain:
        features, probabilities, cams = predictor.explain(images)
    else:
        features, probabilities = predictor.features_and_probabilities(images)
    scores, note = _novelty_scores(predictor, features)
    reject = services.settings.reject_novel if options.reject_novel is None else options.reject_novel
    answers = []
    for i, ranked in enumerate(_ranked(predictor, probabilities, _top_k(predictor, options.top_k))):
        novelty = novelty_answer(predictor.novelty, float(scores[i]))
        answer = _answer(ranked, options.min_confidence, novelty, reject)
        if novelty is None:
            answer["novelty_note"] = note
        if options.explain:
            answer["heatmap"] = _heatmap(predictor, ranked[0][0], cams[i], images[i], uploads[i])
        answers.append(answer)
    return answers


def _novelty_scores(predictor: Predictor, features: Any) -> tuple[np.ndarray, str | None]:
    """Each image's novelty score (NaN where the model has none), and why there is none."""
    missing = np.full(len(features), np.nan)
    if predictor.novelty is None:
        return missing, predictor.novelty_note
    try:
        return predictor.novelty.scores(features), None
    except ValueError as exc:  # a reference made on other features than this extractor gives
        return missing, f"this model's novelty reference does not fit its features ({exc}): retrain it"


def _heatmap(predictor: Predictor, label: str, cam: np.ndarray, image: Image.Image, data: bytes) -> dict[str, Any]:
    spec = predictor.spec
    input_size = spec.input_size if spec is not None else image.width
    heatmap = render_heatmap(
        label, cam, image, uploaded=uploaded_size(data), resize_size=predictor.resize_size, input_size=input_size
    )
    return {"label": heatmap.label, "grid": heatmap.grid, "box": list(heatmap.box), "png": heatmap.png}


def _read(data: bytes | BinaryIO) -> bytes:
    if isinstance(data, bytes):
        return data
    data.seek(0)
    return data.read()


def _decode(services: Services, predictor: Predictor, data: bytes, budget: PixelBudget | None = None) -> Image.Image:
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
    reject_novel: bool | None = None,
    explain: bool = False,
) -> dict[str, Any]:
    """Classify one encoded image.

    Returns:
        ``{prediction, confidence, model_id, top_k: [{label, confidence}], novelty}`` (``novelty`` is
        ``{score, threshold, novel}``, or ``null`` with ``novelty_note`` saying why), and with
        ``explain`` a ``heatmap``. ``reject_novel=None`` means the server's VT_REJECT_NOVEL. ``prediction`` is ``"unknown"`` when the top confidence is below
        ``min_confidence``, or when the photo is novel and novel photos are rejected.

    Raises:
        NotFound, Conflict: see ``resolve_model_id``.
        InvalidImageError: the bytes are not a usable image.
    """
    resolved = resolve_model_id(services, model_id)
    predictor = load_predictor(services, resolved)
    image = _decode(services, predictor, data, PixelBudget(services.settings.max_request_pixels))
    options = Options(top_k, min_confidence, reject_novel, explain)
    return {**_answers(services, predictor, [image], [data], options)[0], "model_id": resolved}


def predict_batch(
    services: Services,
    files: Sequence[tuple[str, bytes | BinaryIO]],
    *,
    model_id: str | None = None,
    top_k: int | None = None,
    min_confidence: float = 0.0,
    reject_novel: bool | None = None,
    explain: bool = False,
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
    options = Options(top_k, min_confidence, reject_novel, explain)
    entries: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Image.Image, bytes]] = []

    def flush() -> None:
        if pending:
            answers = _answers(services, predictor, [p[1] for p in pending], [p[2] for p in pending], options)
            for (entry, _, _), answer in zip(pending, answers):
                entry.update(answer)
            pending.clear()

    for filename, data in files:
        entry: dict[str, Any] = {"filename": filename}
        entries.append(entry)
        try:
            content = _read(data)
            pending.append((entry, _decode(services, predictor, content, budget), content if options.explain else b""))
        except InvalidImageError as exc:
            entry["error"] = {"code": exc.code, "detail": f"{filename!r}: {exc}"}
        if len(pending) >= predictor.extractor.batch_size:
            flush()
    flush()
    return {"model_id": resolved, "predictions": entries}

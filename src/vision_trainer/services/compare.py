"""Compare models on the same photos: accuracy with its interval, per-class scores, confusion matrices,
and a paired test (McNemar) saying whether a difference is real or could be chance."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ml.images import open_image
from ..ml.metrics import classification_report, mcnemar_test, wilson_interval
from ..store import datasets as datasets_repo
from ..store import repository as repo
from ..store.tables import Model
from .context import Services
from .datasets import AddImages, staged_photos
from .errors import InvalidRequest, NotFound
from .prediction import load_predictor

MAX_MODELS = 10
CHUNK = 32
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Photo:
    label: str
    path: Path
    name: str


def compare_models(
    services: Services,
    model_ids: Sequence[str],
    *,
    dataset_id: str | None = None,
    upload: AddImages | None = None,
) -> dict[str, Any]:
    """Judge models on one set of labelled photos none of them trained on.

    The photos are a dataset's (``dataset_id``: its labelled photos, less those any of the models trained
    or was validated on, matched by content) or an upload of labelled photos. Only photos whose label is a
    class of every model count.

    Raises:
        NotFound: a model or the dataset does not exist.
        InvalidRequest: fewer than 2 or more than 10 models, neither or both photo sources, or no photo
            left to judge on (``no_common_photos``).
    """
    ids = list(dict.fromkeys(model_ids))
    if not 2 <= len(ids) <= MAX_MODELS:
        raise InvalidRequest(
            f"name 2 to {MAX_MODELS} different models in model_ids, got {len(ids)}", code="invalid_parameter"
        )
    if (dataset_id is None) == (upload is None):
        raise InvalidRequest(
            "give the photos to compare on: a dataset_id, or labelled photos (label1..N with "
            "files1..N, or an archive of class folders), not both",
            code="invalid_parameter",
        )
    with services.db.session() as session:
        models = []
        for model_id in ids:
            model = repo.get_model(session, model_id=model_id)
            if model is None:
                raise NotFound(f"no model with id {model_id!r}; GET /models lists them")
            models.append(model)
        common = _common_classes(models)
        if dataset_id is not None:
            photos = _dataset_photos(services, session, dataset_id, models, common)
    if upload is not None:
        with staged_photos(services, upload) as staged:
            photos = [
                Photo(common[s.label.casefold()], s.image.path, s.image.filename)
                for s in staged
                if s.label is not None and s.label.casefold() in common
            ]
            return _judge(services, models, photos, source="upload")
    return _judge(services, models, photos, source=f"dataset {dataset_id}")


def _common_classes(models: list[Model]) -> dict[str, str]:
    """``{casefolded label: label}`` of the classes every model has."""
    shared = set.intersection(*({n.casefold() for n in m.class_names} for m in models))
    return {n.casefold(): n for n in models[0].class_names if n.casefold() in shared}


def _dataset_photos(
    services: Services, session: Any, dataset_id: str, models: list[Model], common: dict[str, str]
) -> list[Photo]:
    if datasets_repo.get_dataset(session, dataset_id=dataset_id) is None:
        raise NotFound(f"no dataset with id {dataset_id!r}; GET /datasets lists them")
    seen: set[str] = set()  # content hashes any model trained or was validated on
    for model in models:
        data = model.data or {}
        if model.dataset_id:
            used = [*data.get("train_image_ids", []), *data.get("validation_image_ids", [])]
            seen |= {
                i.content_hash for i in datasets_repo.get_images(session, dataset_id=model.dataset_id, image_ids=used)
            }
    images, _ = datasets_repo.list_images(session, dataset_id=dataset_id)
    return [
        Photo(common[i.label.casefold()], services.files.dataset_image(dataset_id, i.id), i.filename)
        for i in images
        if i.label is not None and i.label.casefold() in common and i.content_hash not in seen
    ]


def _judge(services: Services, models: list[Model], photos: list[Photo], *, source: str) -> dict[str, Any]:
    if not photos:
        raise InvalidRequest(
            "no labelled photo is left to compare on: every photo's label must be a class of every "
            "model, and photos any of the models trained on do not count",
            code="no_common_photos",
        )
    labels = sorted({p.label for p in photos}, key=[p.label for p in photos].index)
    truth = [labels.index(p.label) for p in photos]
    results, right = [], {}
    for model in models:
        predicted = _predict(services, model, photos)
        index = {n.casefold(): i for i, n in enumerate(labels)}
        guesses = [index.get(p.casefold(), -1) for p in predicted]
        correct = [g == t for g, t in zip(guesses, truth)]
        right[model.id] = correct
        report = classification_report(truth, [g if g >= 0 else len(labels) for g in guesses], [*labels, "(other)"])
        low, high = wilson_interval(sum(correct), len(correct))
        results.append(
            {
                "model_id": model.id,
                "name": model.name,
                "backbone": model.backbone,
                "dataset_version": (model.data or {}).get("dataset_version"),
                "accuracy": round(sum(correct) / len(correct), 4),
                "accuracy_ci": [round(low, 4), round(high, 4)],
                "per_class": {k: v for k, v in report["per_class"].items() if k != "(other)"},
                "confusion_matrix": [row[: len(labels)] for row in report["confusion_matrix"][: len(labels)]],
            }
        )
    pairs = [_paired(a, b, right) for a, b in itertools.combinations(results, 2)]
    return {"photos": len(photos), "source": source, "class_names": labels, "models": results, "pairs": pairs}


def _predict(services: Services, model: Model, photos: list[Photo]) -> list[str]:
    predictor = load_predictor(services, model.id)
    labels: list[str] = []
    for start in range(0, len(photos), CHUNK):
        images = [
            open_image(p.path, max_pixels=services.settings.max_image_pixels, draft_size=predictor.resize_size)
            for p in photos[start : start + CHUNK]
        ]
        labels += [ranked[0][0] for ranked in predictor.predict(images, top_k=1)]
    return labels


def _paired(a: dict[str, Any], b: dict[str, Any], right: dict[str, list[bool]]) -> dict[str, Any]:
    test = mcnemar_test(right[a["model_id"]], right[b["model_id"]])
    real = test["p_value"] < SIGNIFICANCE
    better = a if a["accuracy"] >= b["accuracy"] else b
    verdict = (
        f"{better['name']} is better, and the difference is unlikely to be chance (p = {test['p_value']:.3g})"
        if real and a["accuracy"] != b["accuracy"]
        else f"no real difference on these photos (p = {test['p_value']:.3g}); more photos would tell them apart"
    )
    return {
        "model_a": a["model_id"],
        "model_b": b["model_id"],
        "only_a_right": test["b"],
        "only_b_right": test["c"],
        "p_value": round(test["p_value"], 6),
        "significant": real,
        "verdict": verdict,
    }

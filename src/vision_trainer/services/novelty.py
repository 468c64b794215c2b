"""A model's novelty reference: made when the model is saved, read when it predicts.

Saving: the training photos' plain-view features (already in the feature cache: training computed them)
become the reference, calibrated on held-out folds (``ml.novelty``); the test photos then say how many of
them would be flagged (``metrics.novelty``). Reading: a stored head carries it under ``novelty``; a model
without one (imported, or saved before) predicts with ``novelty: null`` and a note saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..ml.backbones import BackboneSpec, pretrained_backbone
from ..ml.data import LabelledImage
from ..ml.extraction import plain_features
from ..ml.fit import single_threaded
from ..ml.novelty import Novelty, novelty_reference
from ..ml.recipe import Compute, Recipe
from .context import Services

log = logging.getLogger(__name__)

NOVELTY_KEY = "novelty"
NO_REFERENCE = (
    "this model stores no features of its training photos (imported, or trained before novelty existed): "
    "retrain it on its dataset to get novelty scores"
)


def model_novelty(
    services: Services,
    spec: BackboneSpec,
    train: Sequence[LabelledImage],
    test: Sequence[LabelledImage],
    metrics: dict[str, Any],
    recipe: Recipe,
    compute: Compute,
    features: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The head checkpoint's ``novelty`` entry (``{}`` when it cannot be made); adds ``metrics["novelty"]``:
    the calibrated threshold and how many of the ``test`` photos it flags.

    ``features`` (training features, their labels, test features) are what a tuned model's head reads
    (its top's output); without them, the frozen backbone's plain-view features from the cache."""
    if len(train) < 2 or (features is None and not compute.pretrained):
        return {}
    if features is not None:
        x_train, y_train, x_test = features
    else:
        backbone = pretrained_backbone(spec, allow_download=compute.allow_download)
        x_train, y_train = plain_features(spec, backbone, train, recipe, compute, cache=services.features)
        x_test, _ = plain_features(spec, backbone, test, recipe, compute, cache=services.features)
    with single_threaded():
        stored = novelty_reference(x_train.cpu().numpy(), y_train.cpu().numpy(), seed=recipe.seed)
        metrics[NOVELTY_KEY] = Novelty.from_stored(stored).summary(x_test.cpu().numpy())
    return {NOVELTY_KEY: stored}


def load_novelty(checkpoint: Mapping[str, Any], feature_size: int | None) -> tuple[Novelty | None, str | None]:
    """The model's novelty reference, or ``None`` and the reason there is none."""
    stored = checkpoint.get(NOVELTY_KEY)
    if not isinstance(stored, Mapping):
        return None, NO_REFERENCE
    try:
        return Novelty.from_stored(stored, feature_size=feature_size), None
    except ValueError as exc:
        log.warning("novelty reference unreadable: %s", exc)
        return None, f"this model's novelty reference cannot be used ({exc}): retrain it to get novelty scores"


def novelty_answer(novelty: Novelty | None, score: float | None) -> dict[str, Any] | None:
    """The ``novelty`` field of a prediction."""
    if novelty is None or score is None or not np.isfinite(score):
        return None
    return {
        "score": round(float(score), 6),
        "threshold": round(novelty.threshold, 6),
        "novel": score > novelty.threshold,
    }

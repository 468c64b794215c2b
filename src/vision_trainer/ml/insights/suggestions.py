"""Label suggestions for unlabelled photos, from the ensemble of out-of-fold heads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..linear_probe import OutOfFold


@dataclass(frozen=True)
class Suggestion:
    index: int
    suggested_label: int
    confidence: float


def label_suggestions(result: OutOfFold, features: np.ndarray) -> list[Suggestion]:
    """Suggested labels for unlabelled photos from the ensemble of fold heads, least certain first.

    Args:
        result: Out-of-fold heads fitted on the labelled photos.
        features: ``[M, F]`` features of the unlabelled photos; ``index`` refers to these rows.
    """
    if len(features) == 0:
        return []
    probabilities = result.ensemble_probabilities(features)
    suggested = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    order = np.argsort(confidence, kind="stable")
    return [Suggestion(int(i), int(suggested[i]), round(float(confidence[i]), 4)) for i in order]

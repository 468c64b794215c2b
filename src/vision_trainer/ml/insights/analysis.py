"""Everything at once: ``analyze`` runs every insight on one dataset's features."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..linear_probe import CvAccuracy, HeadOptions, out_of_fold
from .duplicates import DuplicateGroup, near_duplicate_groups
from .outlier import Outlier, OutlierOptions, outlier_scores, outliers
from .suggestions import Suggestion, label_suggestions
from .suspects import Suspect, suspect_labels


@dataclass(frozen=True)
class InsightOptions:
    """Thresholds and fold settings of ``analyze``; the defaults are chosen in bench/insights_quality.py."""

    folds: int = 5
    seed: int = 0
    head: HeadOptions = field(default_factory=HeadOptions)
    suspect_max_given_probability: float = 0.2
    suspect_min_confidence: float = 0.5
    duplicate_min_similarity: float | None = None
    min_fingerprint_similarity: float = 0.75
    outlier: OutlierOptions = field(default_factory=OutlierOptions)
    outlier_min_score: float = 3.0
    outlier_max_fraction: float = 0.05


@dataclass(frozen=True)
class Insights:
    """What ``analyze`` found; every index refers to a row of the features it was given.

    ``cv_accuracy`` and ``temperature`` are ``None`` and 1.0 when fewer than two classes have labelled photos.
    ``warnings`` say when a list deserves less trust than usual.
    """

    suspects: list[Suspect]
    duplicates: list[DuplicateGroup]
    outliers: list[Outlier]
    suggestions: list[Suggestion]
    cv_accuracy: CvAccuracy | None
    temperature: float
    warnings: tuple[str, ...] = ()


# Below this k-fold accuracy most listed suspects are ambiguous photos, not wrong labels: on flowers5
# (about 0.70) a tenth of the photos is listed with no label flipped at all, on cats_dogs (0.99) 1-3.
RELIABLE_SUSPECTS_ACCURACY = 0.85


def _warnings(cv: CvAccuracy | None, suspects: list[Suspect]) -> tuple[str, ...]:
    if cv is None or cv.mean >= RELIABLE_SUSPECTS_ACCURACY or not suspects:
        return ()
    return (
        f"the classes are hard to tell apart on these features (cross-validated accuracy {cv.mean:.2f}): "
        "many suspects are ambiguous photos rather than wrong labels; the top of the list is the most reliable",
    )


def analyze(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    fingerprints: np.ndarray | None = None,
    options: InsightOptions = InsightOptions(),
) -> Insights:
    """Suspect labels, near-duplicates, outliers and suggestions for one dataset's cached features.

    Args:
        features: ``[N, F]`` plain-view features of every photo of the dataset (one backbone).
        labels: ``[N]`` class indices, -1 for unlabelled photos.
        num_classes: Number of classes (some may have no labelled photo yet).
        fingerprints: Optional ``[N, D]`` ``image_fingerprint`` rows, to confirm duplicates on the pixels.
        options: Thresholds and folds.
    """
    labels = np.asarray(labels, dtype=np.int64)
    labelled = np.flatnonzero(labels >= 0)
    unlabelled = np.flatnonzero(labels < 0)
    suspects: list[Suspect] = []
    suggestions: list[Suggestion] = []
    cv, temperature = None, 1.0
    if len(np.unique(labels[labelled])) >= 2:
        result = out_of_fold(
            features[labelled], labels[labelled], num_classes, folds=options.folds, seed=options.seed, head=options.head
        )
        cv, temperature = CvAccuracy.of(result.fold_accuracies(labels[labelled])), result.temperature
        found = suspect_labels(
            result.probabilities(),
            labels[labelled],
            max_given_probability=options.suspect_max_given_probability,
            min_confidence=options.suspect_min_confidence,
        )
        suspects = [replace(s, index=int(labelled[s.index])) for s in found]
        suggestions = [
            replace(s, index=int(unlabelled[s.index])) for s in label_suggestions(result, features[unlabelled])
        ]
    duplicates = near_duplicate_groups(
        features,
        min_similarity=options.duplicate_min_similarity,
        fingerprints=fingerprints,
        min_fingerprint_similarity=options.min_fingerprint_similarity,
    )
    scores = outlier_scores(features, labels, options.outlier)
    found_outliers = outliers(scores, min_score=options.outlier_min_score, max_fraction=options.outlier_max_fraction)
    return Insights(suspects, duplicates, found_outliers, suggestions, cv, temperature, _warnings(cv, suspects))

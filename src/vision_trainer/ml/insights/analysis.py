"""Everything at once: ``analyze`` runs every insight on one dataset's features."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..learning_curve import LearningCurve, learning_curve
from ..linear_probe import HeadOptions, OutOfFold, ProbeCvAccuracy, out_of_fold
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
    learning_curve: bool = True
    duplicate_min_similarity: float | None = None
    min_fingerprint_similarity: float = 0.75
    outlier: OutlierOptions = field(default_factory=OutlierOptions)
    outlier_min_score: float = 3.0
    outlier_max_fraction: float = 0.05


@dataclass(frozen=True)
class Insights:
    """What ``analyze`` found; every index refers to a row of the features it was given.

    ``cv_accuracy``, ``temperature`` and ``learning_curve`` are ``None``, 1.0 and ``None`` when fewer than two
    classes have labelled photos.
    ``warnings`` say when a list deserves less trust than usual.
    """

    suspects: list[Suspect]
    duplicates: list[DuplicateGroup]
    outliers: list[Outlier]
    suggestions: list[Suggestion]
    cv_accuracy: ProbeCvAccuracy | None
    temperature: float
    warnings: tuple[str, ...] = ()
    learning_curve: LearningCurve | None = None


# Below this k-fold accuracy most listed suspects are ambiguous photos, not wrong labels: on flowers5
# (about 0.70) a tenth of the photos is listed with no label flipped at all, on cats_dogs (0.99) 1-3.
RELIABLE_SUSPECTS_ACCURACY = 0.85


def _warnings(cv: ProbeCvAccuracy | None, suspects: list[Suspect]) -> tuple[str, ...]:
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
    probe_features: np.ndarray | None = None,
    probe_out_of_fold: OutOfFold | None = None,
    options: InsightOptions = InsightOptions(),
) -> Insights:
    """Suspect labels, near-duplicates, outliers, suggestions and the learning curve of one dataset's features.

    Every step is deterministic: the same rows in the same order give the same lists, scores and order
    (seeded folds and draws, stable sorts; run it on a fixed number of torch threads).

    Args:
        features: ``[N, F]`` plain-view features of every photo of the dataset on the backbone whose
            similarity thresholds were measured (near-duplicates and outliers are found there).
        labels: ``[N]`` class indices, -1 for unlabelled photos.
        num_classes: Number of classes (some may have no labelled photo yet).
        fingerprints: Optional ``[N, D]`` ``image_fingerprint`` rows, to confirm duplicates on the pixels.
        probe_features: Optional ``[N, F2]`` features of the same photos that classify them best (the
            backbone the dataset's models use); the out-of-fold heads behind suspects, suggestions and the
            learning curve train on them. Default: ``features``.
        options: Thresholds and folds.
    """
    labels = np.asarray(labels, dtype=np.int64)
    labelled = np.flatnonzero(labels >= 0)
    unlabelled = np.flatnonzero(labels < 0)
    suspects: list[Suspect] = []
    suggestions: list[Suggestion] = []
    cv, temperature = None, 1.0
    curve = None
    probe = features if probe_features is None else probe_features
    if len(np.unique(labels[labelled])) >= 2:
        x, y = probe[labelled], labels[labelled]
        result = probe_out_of_fold or out_of_fold(
            x, y, num_classes, folds=options.folds, seed=options.seed, head=options.head
        )
        cv, temperature = ProbeCvAccuracy.of(result.fold_accuracies(y)), result.temperature
        suspects = [replace(s, index=int(labelled[s.index])) for s in suspect_labels(result.probabilities(), y)]
        suggestions = [replace(s, index=int(unlabelled[s.index])) for s in label_suggestions(result, probe[unlabelled])]
        if options.learning_curve and np.bincount(y).max() >= 4:
            curve = learning_curve(
                x, y, num_classes, folds=options.folds, seed=options.seed, head=options.head, full=result
            )
    duplicates = near_duplicate_groups(
        features,
        min_similarity=options.duplicate_min_similarity,
        fingerprints=fingerprints,
        min_fingerprint_similarity=options.min_fingerprint_similarity,
    )
    scores = outlier_scores(features, labels, options.outlier)
    found_outliers = outliers(scores, min_score=options.outlier_min_score, max_fraction=options.outlier_max_fraction)
    return Insights(suspects, duplicates, found_outliers, suggestions, cv, temperature, _warnings(cv, suspects), curve)

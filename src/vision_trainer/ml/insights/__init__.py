"""Dataset insights on cached plain-view features: suspect labels, near-duplicates, outliers, class
balance and label suggestions for unlabelled photos.

Pure functions on ``[N, F]`` float features of one backbone and integer labels (-1 = unlabelled); no
settings, database or HTTP. ``analyze`` runs everything; the defaults of its thresholds were chosen on
real photos with planted problems (bench/insights_quality.py prints the measurements). The
cross-validated heads behind suspects and suggestions live in ``linear_probe``.

One module per insight: ``suspects``, ``duplicates``, ``outlier``, ``balance``, ``suggestions``, and
``analysis`` for everything at once.
"""

from __future__ import annotations

from ..linear_probe import HeadOptions, ProbeCvAccuracy, out_of_fold, probe_cv_accuracy
from .analysis import RELIABLE_SUSPECTS_ACCURACY, InsightOptions, Insights, analyze
from .balance import BalanceWarning, ClassBalance, class_balance
from .duplicates import (
    CONFIRMED_MIN_SIMILARITY,
    FEATURES_ONLY_MIN_SIMILARITY,
    DuplicateGroup,
    DuplicateKind,
    cosine_matrix,
    duplicate_kind,
    image_fingerprint,
    near_duplicate_groups,
)
from .outlier import Outlier, OutlierOptions, neighbour_scores, outlier_scores, outliers
from .suggestions import Suggestion, label_suggestions
from .suspects import Suspect, suspect_labels, suspect_ranking

__all__ = [
    "CONFIRMED_MIN_SIMILARITY",
    "FEATURES_ONLY_MIN_SIMILARITY",
    "RELIABLE_SUSPECTS_ACCURACY",
    "BalanceWarning",
    "ClassBalance",
    "ProbeCvAccuracy",
    "DuplicateGroup",
    "DuplicateKind",
    "HeadOptions",
    "InsightOptions",
    "Insights",
    "Outlier",
    "OutlierOptions",
    "Suggestion",
    "Suspect",
    "analyze",
    "class_balance",
    "cosine_matrix",
    "probe_cv_accuracy",
    "duplicate_kind",
    "image_fingerprint",
    "label_suggestions",
    "near_duplicate_groups",
    "neighbour_scores",
    "out_of_fold",
    "outlier_scores",
    "outliers",
    "suspect_labels",
    "suspect_ranking",
]

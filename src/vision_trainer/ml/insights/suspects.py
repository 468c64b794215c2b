"""Suspect labels by confident learning: photos whose given label their out-of-fold prediction contradicts.

Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", 2021; the ``cleanlab`` package) needs no fixed probability cut: each class's threshold is the mean
self-confidence of the photos filed under it, the confident joint of given and likely-true labels estimates
how many labels of each class are wrong, and that many of each class's least self-confident photos are
listed. So the list is as long as the data says, on easy classes and on confusable ones alike.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Suspect:
    """A labelled photo whose label the out-of-fold prediction contradicts.

    Attributes:
        index: Row of the photo among the labelled photos given.
        label: The given label.
        suggested_label: The most likely other class.
        confidence: Out-of-fold probability of ``suggested_label``.
        score: ``1 - p(given label)``, higher = more likely wrong; the list is ranked by it.
    """

    index: int
    label: int
    suggested_label: int
    confidence: float
    score: float


def label_issue_mask(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which photos confident learning takes for mislabelled (``cleanlab.filter.find_label_issues``,
    pruned by the estimated noise rate of each class), as a boolean mask.

    Classes with fewer than two photos or absent from the labels are left to ``suspect_labels``' own check.
    """
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():  # cleanlab warns about tiny classes; suspect_labels drops those itself
        warnings.simplefilter("ignore")
        mask = find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate", n_jobs=1, verbose=False)
    return np.asarray(mask, dtype=bool)


def suspect_labels(probabilities: np.ndarray, labels: np.ndarray, *, min_class_size: int = 3) -> list[Suspect]:
    """Photos confident learning finds mislabelled, the most likely wrong first.

    The ranking is cleanlab's self-confidence order (``score = 1 - p(given)``): with more than two classes
    it finds flipped labels better than the margin or the top other class (bench/insights_quality.py),
    because a wrong label is usually far from every plausible class. Ties keep the photos' order, so the
    same probabilities always give the same list.

    Args:
        probabilities: ``[N, C]`` calibrated out-of-fold probabilities (``OutOfFold.probabilities()``).
        labels: ``[N]`` the given labels.
        min_class_size: Photos of classes smaller than this are never listed: the folds leave too few
            of them to learn the class from.

    Returns:
        Suspects, highest ``score`` first.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return []
    counts = np.bincount(labels, minlength=probabilities.shape[1])
    present = np.flatnonzero(counts > 0)
    if len(present) < 2:
        return []
    # cleanlab wants every class of the matrix present; classes without photos are dropped and renumbered.
    remap = np.full(probabilities.shape[1], -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    kept = probabilities[:, present]
    kept = kept / np.maximum(kept.sum(axis=1, keepdims=True), 1e-12)
    flagged = label_issue_mask(kept, remap[labels]) & (counts[labels] >= min_class_size)
    rows = np.arange(len(labels))
    given = probabilities[rows, labels]
    others = probabilities.copy()
    others[rows, labels] = -1.0
    suggested = others.argmax(axis=1)
    listed = np.flatnonzero(flagged)
    order = listed[np.argsort(given[listed], kind="stable")]
    return [
        Suspect(
            int(i),
            int(labels[i]),
            int(suggested[i]),
            round(float(others[i, suggested[i]]), 4),
            round(float(1.0 - given[i]), 4),
        )
        for i in order
    ]


def suspect_ranking(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every labelled photo's row, most likely wrong first (the order ``suspect_labels`` lists in)."""
    labels = np.asarray(labels, dtype=np.int64)
    given = probabilities[np.arange(len(labels)), labels]
    return np.argsort(given, kind="stable")

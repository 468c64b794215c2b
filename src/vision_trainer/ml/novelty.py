"""Novelty: how unlike the training photos a photo is, on the model's own features, so that a model can
answer "unknown" for photos of things it was never trained on.

The score is the cosine distance of the photo's L2-normalised features to its ``NEIGHBOURS``-th nearest
training photo (Sun et al., "Out-of-Distribution Detection with Deep Nearest Neighbors", 2022). Measured
on our photos (bench/novelty.py), it flagged 96-100 % of another dataset's photos where a class-conditional
Mahalanobis distance on the same features (in its 64 or 128 leading principal components, shrunk
covariance) flagged 1-74 %: what makes a photo foreign lies mostly outside the directions the training
photos vary in, and nearest neighbours need no distribution to be assumed.

The threshold is calibrated on the training photos themselves, held out fold by fold: each fold is scored
against the others, and the threshold is the score that ``NOVEL_SHARE`` (5 %) of them exceed. Served
against all training photos, in-distribution photos exceed it a little less often than that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NEIGHBOURS = 5
NOVEL_SHARE = 0.05
FOLDS = 5
MAX_REFERENCE = 5000  # training photos kept per model (about 12 MB at 1,280 float16 features)
METHOD = "knn_cosine"


def _unit(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


def _kth_distance(reference: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """``1 - cosine`` to the ``k``-th most similar reference row (unit rows on both sides)."""
    k = max(1, min(k, len(reference)))
    similarity = queries @ reference.T
    kth = np.partition(-similarity, k - 1, axis=1)[:, k - 1]
    return (1.0 + kth).astype(np.float64)


def _spread(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return assignment


def _kept(labels: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` rows, evenly spaced within each class (every class keeps its share)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rows = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(1, round(limit * len(members) / len(labels)))
        rows.append(members[np.linspace(0, len(members) - 1, take).round().astype(np.int64)])
    return np.unique(np.concatenate(rows))


def novelty_reference(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    share: float = NOVEL_SHARE,
    neighbours: int = NEIGHBOURS,
    folds: int = FOLDS,
    seed: int = 0,
    max_reference: int = MAX_REFERENCE,
) -> dict[str, Any]:
    """What a model stores so that its predictions can carry a novelty score: its training photos'
    normalised features and the calibrated threshold (plain types and one tensor: ``weights_only``-safe).

    Args:
        features: ``[N, F]`` plain-view features of the training photos, as the model's extractor gives them.
        labels: ``[N]`` their classes (the calibration folds are stratified by them).
        share: Share of held-out training photos that the threshold counts as novel.
        neighbours: Which nearest training photo the distance is taken to.
        folds: Calibration folds.
        seed: Seeds the folds.
        max_reference: Most training photos kept (evenly per class beyond it).

    Raises:
        ValueError: fewer than two training photos, or features that are not ``[N, F]``.
    """
    features = np.asarray(features)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels) or len(features) < 2:
        raise ValueError(f"novelty needs [N, F] features of at least 2 photos, got {features.shape}")
    kept = _kept(labels, max_reference)
    unit, kept_labels = _unit(features[kept]), labels[kept]
    k = min(folds, len(kept))
    assignment = _spread(kept_labels, k, seed)
    held_out = np.zeros(len(kept))
    for fold in range(k):
        rest = assignment != fold
        held_out[~rest] = _kth_distance(unit[rest], unit[~rest], neighbours)
    threshold = float(np.quantile(held_out, 1.0 - share))
    return {
        "method": METHOD,
        "neighbours": int(neighbours),
        "share": float(share),
        "threshold": threshold,
        "calibrated_on": len(kept),
        "reference": torch.from_numpy(unit.astype(np.float16)),
    }


@dataclass(frozen=True, eq=False)
class Novelty:
    """A loaded novelty reference: ``scores`` of features, and the threshold above which a photo is novel."""

    reference: np.ndarray
    threshold: float
    neighbours: int
    share: float

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any], *, feature_size: int | None = None) -> Novelty:
        """Check and load what ``novelty_reference`` stored.

        Raises:
            ValueError: not a reference this version reads (method, shapes, finite threshold).
        """
        reference = stored.get("reference")
        threshold = stored.get("threshold")
        neighbours = stored.get("neighbours", NEIGHBOURS)
        if stored.get("method") != METHOD or not isinstance(reference, torch.Tensor) or reference.ndim != 2:
            raise ValueError("the stored novelty reference is not one this version reads")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
            raise ValueError("the stored novelty threshold is not a finite number")
        if not isinstance(neighbours, int) or neighbours < 1 or len(reference) < 1:
            raise ValueError("the stored novelty reference is empty or names no neighbour count")
        if feature_size is not None and reference.shape[1] != feature_size:
            raise ValueError(f"the novelty reference has {reference.shape[1]} features, the model gives {feature_size}")
        return cls(reference.float().numpy(), float(threshold), neighbours, float(stored.get("share", NOVEL_SHARE)))

    def scores(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """``[N]`` novelty scores (cosine distance to the k-th nearest training photo) of ``[N, F]`` features."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().float().numpy()
        if features.shape[1] != self.reference.shape[1]:
            raise ValueError(
                f"features have {features.shape[1]} values, the novelty reference {self.reference.shape[1]}"
            )
        return _kth_distance(self.reference, _unit(features), self.neighbours)

    def summary(self, features: np.ndarray) -> dict[str, Any]:
        """What ``metrics.novelty`` reports for held-out photos (the model's test photos): how many would be
        flagged novel (and answered ``unknown`` with ``reject_novel``)."""
        flagged = int((self.scores(features) > self.threshold).sum()) if len(features) else 0
        return {
            "method": METHOD,
            "neighbours": self.neighbours,
            "threshold": round(self.threshold, 6),
            "calibrated_share": self.share,
            "test_count": len(features),
            "test_novel": flagged,
            "test_novel_rate": round(flagged / len(features), 4) if len(features) else None,
        }

"""Outliers: photos like no class of the dataset and like none of their nearest photos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..linear_probe import standardize, stratified_folds
from .duplicates import similarity_blocks, unit_rows


@dataclass(frozen=True)
class OutlierOptions:
    """How far from every class (measured out of fold) and from its nearest photos a photo is.

    Attributes:
        dims: Principal components of the z-scored features kept (the distance is taken there); at most
            one per 6 photos scored out of fold, so that small datasets still estimate the covariance.
        shrinkage: Weight of the scaled identity blended into the within-class covariance.
        trim: Fraction of each training fold farthest from its class left out of the class statistics,
            so that a cluster of foreign photos does not widen the class it was filed under.
        folds: k of the out-of-fold scoring.
        seed: Seeds the folds.
        neighbours: Which nearest photo the neighbour part measures the distance to.
    """

    dims: int = 64
    shrinkage: float = 0.2
    trim: float = 0.1
    folds: int = 5
    seed: int = 0
    neighbours: int = 10


@dataclass(frozen=True)
class Outlier:
    index: int
    score: float


def outlier_scores(features: np.ndarray, labels: np.ndarray, options: OutlierOptions = OutlierOptions()) -> np.ndarray:
    """How unlike the rest of the dataset each photo is: the mean of two robust z-scores, one of its
    distance to the nearest class, one of its distance to its nearest photos.

    The class part: Mahalanobis distances (shrunk within-class covariance, trimmed class statistics) in
    the top principal components of the z-scored features. Photos of classes with at least two labelled
    photos are scored by statistics fitted without their fold; the others (unlabelled, label -1, or of a
    class with a single photo) by statistics of all those photos. The distance to class c becomes
    ``(d - median_c) / MAD_c`` over class c's own out-of-fold distances; the class part is the smallest
    over classes. The neighbour part (``neighbour_scores``) sees what the class statistics blur: a photo
    can sit within a class's spread along the principal components and still resemble no photo in it.
    Measured on planted foreign photos (bench/insights_quality.py), the mean ranked them higher than
    either part alone.

    Returns:
        ``[N]`` scores; all 0 when no class has two labelled photos or fewer than ``2 * folds`` photos qualify.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels[labels >= 0], minlength=1)
    classes = [int(c) for c in np.flatnonzero(counts >= 2)]
    members = np.flatnonzero(np.isin(labels, classes))
    if not classes or len(members) < 2 * options.folds:
        return np.zeros(len(labels))
    dims = min(options.dims, max(2, len(members) // 6))
    z = _principal_components(standardize(features), dims, options.seed)
    y = labels[members]
    distances = np.zeros((len(labels), len(classes)))
    assignment = stratified_folds(y, options.folds, options.seed)
    for fold in range(options.folds):
        fit, rows = members[assignment != fold], members[assignment == fold]
        distances[rows] = _class_distances(z[fit], labels[fit], classes, options)(z[rows])
    others = np.setdiff1d(np.arange(len(labels)), members)
    if len(others):
        distances[others] = _class_distances(z[members], y, classes, options)(z[others])
    by_class = _robust_class_z(distances, labels, classes).min(axis=1)
    return (by_class + neighbour_scores(features, options.neighbours, labels)) / 2


def neighbour_scores(features: np.ndarray, k: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Robust z-scores (over all photos) of each photo's cosine distance to its ``k``-th most similar
    other photo: a photo like no other in the dataset is far even from its nearest ones. ``k`` above the
    size of a small cluster of foreign photos keeps them from vouching for each other; with ``labels``, a
    labelled photo's ``k`` is at most its class's other photos, so that a small class is not far from
    everything merely for being small. Scores are clipped to [-5, 10]: one part alone does not decide."""
    n = len(features)
    if n < 3:
        return np.zeros(n)
    ks = np.full(n, min(k, n - 1))
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        sizes = np.bincount(labels[labels >= 0], minlength=1)
        labelled = labels >= 0
        ks[labelled] = np.clip(sizes[labels[labelled]] - 1, 1, ks[labelled])
    top = int(ks.max())
    # The top similarities of each photo, a block of rows at a time (never the whole n x n matrix).
    nearest = np.concatenate(
        [
            -np.sort(-np.partition(rows, n - top, axis=1)[:, n - top :], axis=1)  # [rows, top], most similar first
            for _, rows in similarity_blocks(unit_rows(features))
        ]
    )
    distance = 1.0 - nearest[np.arange(n), ks - 1].astype(np.float64)
    median = np.median(distance)
    # Floored: where most photos have a copy the spread of the distances is near 0.
    spread = max(1.4826 * np.median(np.abs(distance - median)), 0.05 * median, 1e-6)
    return np.clip((distance - median) / spread, -5.0, 10.0)


def _principal_components(z: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """``z`` projected on its top ``dims`` principal directions (randomized SVD with a seeded, local generator)."""
    k = min(dims, *z.shape)
    sketch = z @ np.random.default_rng(seed).standard_normal((z.shape[1], k + 10)).astype(z.dtype)
    for _ in range(3):  # power iterations sharpen the leading directions
        sketch, _ = np.linalg.qr(z @ (z.T @ sketch))
    basis, _ = np.linalg.qr(sketch)
    _, _, directions = np.linalg.svd(basis.T @ z, full_matrices=False)
    return (z @ directions[:k].T).astype(np.float64)


def _class_distances(
    z: np.ndarray, y: np.ndarray, classes: Sequence[int], options: OutlierOptions
) -> Callable[[np.ndarray], np.ndarray]:
    means, precision = _class_statistics(z, y, classes, options.shrinkage)
    if options.trim > 0:
        own = _mahalanobis(z, means, precision)[np.arange(len(y)), np.searchsorted(classes, y)]
        keep = own <= np.quantile(own, 1 - options.trim)
        means, precision = _class_statistics(z[keep], y[keep], classes, options.shrinkage)
    return lambda rows: _mahalanobis(rows, means, precision)


def _class_statistics(
    z: np.ndarray, y: np.ndarray, classes: Sequence[int], shrinkage: float
) -> tuple[np.ndarray, np.ndarray]:
    means = np.stack([z[y == c].mean(axis=0) if (y == c).any() else z.mean(axis=0) for c in classes])
    residuals = z - means[np.searchsorted(classes, y)]
    covariance = residuals.T @ residuals / max(1, len(z))
    scale = np.trace(covariance) / len(covariance)
    shrunk = (1 - shrinkage) * covariance + shrinkage * max(scale, 1e-6) * np.eye(len(covariance))
    return means, np.linalg.inv(shrunk)


def _mahalanobis(z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    squared = [np.einsum("ij,jk,ik->i", z - m, precision, z - m) for m in means]
    return np.sqrt(np.maximum(np.stack(squared, axis=1), 0.0))


def _robust_class_z(distances: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    scores = np.empty_like(distances)
    for column, c in enumerate(classes):
        own = distances[labels == c, column]
        median = np.median(own)
        spread = 1.4826 * np.median(np.abs(own - median))
        scores[:, column] = (distances[:, column] - median) / max(spread, 1e-6)
    return scores


def outliers(scores: np.ndarray, *, min_score: float = 3.0, max_fraction: float = 0.05) -> list[Outlier]:
    """Photos scoring at least ``min_score``, highest first, at most ``max_fraction`` of all photos."""
    cap = int(np.floor(max_fraction * len(scores)))
    order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= min_score][:cap]
    return [Outlier(i, round(float(scores[i]), 2)) for i in order]

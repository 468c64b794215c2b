"""Dataset insights on cached plain-view features: suspect labels, near-duplicates, outliers, class
balance and label suggestions for unlabelled photos.

Pure functions on ``[N, F]`` float features of one backbone and integer labels (-1 = unlabelled); no
settings, database or HTTP. ``analyze`` runs everything; the defaults of its thresholds were chosen on
real photos with planted problems (bench/insights_quality.py prints the measurements). The
cross-validated heads behind suspects and suggestions live in ``linear_probe``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from PIL import Image

from .linear_probe import (
    CvAccuracy,
    HeadOptions,
    OutOfFold,
    cross_validated_accuracy,
    out_of_fold,
    standardize,
    stratified_folds,
)

__all__ = [
    "BalanceWarning",
    "ClassBalance",
    "CvAccuracy",
    "DuplicateGroup",
    "HeadOptions",
    "InsightOptions",
    "Insights",
    "Outlier",
    "OutlierOptions",
    "Suggestion",
    "Suspect",
    "analyze",
    "class_balance",
    "cross_validated_accuracy",
    "duplicate_kind",
    "image_fingerprint",
    "label_suggestions",
    "near_duplicate_groups",
    "neighbour_scores",
    "out_of_fold",
    "outlier_scores",
    "outliers",
    "suspect_labels",
]


# --- suspect labels -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suspect:
    """A labelled photo whose label the out-of-fold prediction contradicts."""

    index: int
    label: int
    suggested_label: int
    confidence: float


def suspect_labels(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    max_given_probability: float = 0.2,
    min_confidence: float = 0.5,
    min_class_size: int = 3,
) -> list[Suspect]:
    """Photos whose given label the out-of-fold prediction contradicts, most contradicted first.

    A photo is listed when the rest of the data gives its label at most ``max_given_probability`` and
    one other class at least ``min_confidence``. The ranking is by ``1 - p(given label)``, the
    probability that the photo belongs to some other class: with more than two classes it finds
    flipped labels better than ranking by the top other class alone (flowers5, 10 % flipped: 80 % vs
    70 % of them in the top 2x), because a wrong label is usually far from every plausible class.

    Args:
        probabilities: ``[N, C]`` calibrated out-of-fold probabilities (``OutOfFold.probabilities()``).
        labels: ``[N]`` the given labels.
        max_given_probability: Highest probability of the given label that is listed.
        min_confidence: Lowest probability of the suggested class that is listed.
        min_class_size: Photos of classes smaller than this are never listed: the folds leave too few
            of them to learn the class from.

    Returns:
        Suspects with ``confidence`` = probability of ``suggested_label``, the most contradicted first.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))
    given = probabilities[rows, labels]
    others = probabilities.copy()
    others[rows, labels] = -1.0
    suggested = others.argmax(axis=1)
    confidence = others[rows, suggested]
    counts = np.bincount(labels, minlength=probabilities.shape[1])
    listed = np.flatnonzero(
        (given <= max_given_probability) & (confidence >= min_confidence) & (counts[labels] >= min_class_size)
    )
    order = listed[np.lexsort((-confidence[listed], given[listed]))]
    return [Suspect(int(i), int(labels[i]), int(suggested[i]), round(float(confidence[i]), 4)) for i in order]


# --- near-duplicates ------------------------------------------------------------------------------


# Measured on resized (90 %) JPEG (q72) copies (bench/insights_quality.py): copies of ordinary photos
# keep 0.92-0.99, of 128-pixel flowers 0.85-0.97; different photos stay under 0.79 on cats_dogs but
# reach 0.89 among blurry flowers on Lite0. Features alone therefore need 0.90; pixel fingerprints
# reject the look-alikes, and with them 0.80 finds every copy.
FEATURES_ONLY_MIN_SIMILARITY = 0.9
CONFIRMED_MIN_SIMILARITY = 0.8


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are copies of one another; ``similarity`` is the weakest link that joined the group."""

    members: tuple[int, ...]
    similarity: float


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``vectors``, with -1 on the diagonal."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -1.0)
    return similarity


def near_duplicate_groups(
    features: np.ndarray,
    *,
    min_similarity: float | None = None,
    fingerprints: np.ndarray | None = None,
    min_fingerprint_similarity: float = 0.75,
) -> list[DuplicateGroup]:
    """Groups of photos whose z-scored features are nearly identical, most similar first.

    Raw cosine does not separate copies from look-alikes on every backbone; per-dimension z-scores over
    the dataset do (measured in bench/insights_quality.py). Some backbones still map distinct blurry
    textures to near-identical features; ``fingerprints`` (``image_fingerprint`` of each photo) then
    confirm each pair on the pixels.

    Args:
        features: ``[N, F]`` plain-view features of every photo, labelled or not, of one backbone.
        min_similarity: Lowest cosine of z-scored features that makes two photos copies; default
            ``FEATURES_ONLY_MIN_SIMILARITY`` (0.90), or ``CONFIRMED_MIN_SIMILARITY`` (0.80) with fingerprints.
        fingerprints: Optional ``[N, D]`` pixel fingerprints; a pair must also reach ``min_fingerprint_similarity``.
        min_fingerprint_similarity: Lowest fingerprint cosine of a pair.

    Returns:
        Groups (single linkage over qualifying pairs) with members in ascending order.
    """
    if len(features) < 2:
        return []
    if min_similarity is None:
        min_similarity = FEATURES_ONLY_MIN_SIMILARITY if fingerprints is None else CONFIRMED_MIN_SIMILARITY
    similarity = cosine_matrix(standardize(features))
    linked = similarity >= min_similarity
    if fingerprints is not None:
        linked &= cosine_matrix(np.asarray(fingerprints, dtype=np.float32)) >= min_fingerprint_similarity
    first, second = np.nonzero(np.triu(linked, k=1))
    groups = _link(len(features), zip(first.tolist(), second.tolist()))
    found = [
        DuplicateGroup(tuple(members), round(float(_weakest_link(similarity, linked, members)), 4))
        for members in groups
    ]
    return sorted(found, key=lambda g: (-g.similarity, g.members))


def _link(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [members for members in groups.values() if len(members) > 1]


def _weakest_link(similarity: np.ndarray, linked: np.ndarray, members: list[int]) -> float:
    block = np.ix_(members, members)
    return float(np.where(linked[block], similarity[block], np.inf).min())


def image_fingerprint(image: Image.Image, size: int = 16) -> np.ndarray:
    """A pixel fingerprint for ``near_duplicate_groups``: the zero-mean, unit-norm ``size``x``size`` grey thumbnail.

    A resized, re-compressed copy keeps a cosine of about 0.99 to its original; different photos
    that a backbone finds alike (blurry grass, two sunsets) stay far below 0.75.
    """
    thumbnail = np.asarray(image.convert("L").resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    centred = (thumbnail - thumbnail.mean()).ravel()
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm > 0 else centred


DuplicateKind = Literal["same_class", "cross_class", "cross_split"]


def duplicate_kind(labels: Sequence[int | None], in_test: Sequence[bool]) -> DuplicateKind:
    """What a group means: ``cross_class`` when its labelled members disagree (one label is wrong),
    else ``cross_split`` when it spans train and test (it would leak), else ``same_class``."""
    if len({label for label in labels if label is not None and label >= 0}) > 1:
        return "cross_class"
    return "cross_split" if len(set(in_test)) > 1 else "same_class"


# --- outliers -------------------------------------------------------------------------------------


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
    similarity = cosine_matrix(np.asarray(features, dtype=np.float32))
    nearest = -np.sort(-np.partition(similarity, n - top, axis=1)[:, n - top :], axis=1)  # [n, top], most similar first
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


# --- class balance ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BalanceWarning:
    """``code``: ``imbalanced`` (smallest class under half the largest) or ``few_photos`` (under the recommended count)."""

    code: str
    message: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class ClassBalance:
    counts: dict[str, int]
    warnings: tuple[BalanceWarning, ...]


def class_balance(counts: Mapping[str, int], recommended: int = 20) -> ClassBalance:
    """Labelled photos per class, with a warning when the classes are far apart in size or too small.

    Args:
        counts: Labelled photos per class name.
        recommended: Fewest photos per class we recommend.
    """
    warnings: list[BalanceWarning] = []
    if counts:
        largest = max(counts, key=lambda name: counts[name])
        smallest = min(counts, key=lambda name: counts[name])
        if counts[smallest] * 2 < counts[largest]:
            warnings.append(
                BalanceWarning(
                    "imbalanced",
                    f"class {smallest!r} has {counts[smallest]} photos, less than half of {largest!r} "
                    f"({counts[largest]}); add photos to it or train with class_weighting=balanced",
                    (smallest, largest),
                )
            )
        few = tuple(name for name, count in counts.items() if count < recommended)
        if few:
            listed = ", ".join(f"{name!r} ({counts[name]})" for name in few)
            warnings.append(
                BalanceWarning(
                    "few_photos",
                    f"fewer than {recommended} photos in {listed}; accuracy will be rough until you add more",
                    few,
                )
            )
    return ClassBalance(dict(counts), tuple(warnings))


# --- suggestions for unlabelled photos -------------------------------------------------------------


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


# --- everything at once ----------------------------------------------------------------------------


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

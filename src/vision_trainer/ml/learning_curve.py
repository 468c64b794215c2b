"""How many photos to add: cross-validated accuracy on growing shares of the labelled photos, an inverse
power law fitted through it, and where it leads.

Accuracy against training-set size follows an inverse power law, ``accuracy(n) = a - b * n**-c``, closely
enough to extrapolate a few-fold (Figueroa et al., "Predicting sample size required for classification
performance", 2012; Hestness et al., "Deep learning scaling is predictable, empirically", 2017). Each
measured point is the k-fold accuracy (and per-class recall) of the linear probe on a stratified share of
the photos; the shares are nested (a larger one holds the smaller), and the shares below the whole are
drawn up to ``repeats`` times and averaged, because one draw of a quarter of a small dataset is noisy (four
draws of the smallest share instead of two brought the worst projection from half a dataset from 3.2 to 2.6
points off the real accuracy, bench/trust.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .linear_probe import HeadOptions, OutOfFold, out_of_fold

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
PROJECTION_FACTORS = (1.25, 1.5, 2.0, 3.0, 4.0)
# Exponents of published learning curves lie between about 0.1 and 1; steeper fits of four noisy points
# overshot (bench/trust.py: with exponents up to 2 the worst projection from half a dataset was 3.2 points off).
EXPONENTS = np.round(np.arange(0.1, 1.0001, 0.05), 4)


@dataclass(frozen=True)
class PowerLaw:
    """``value(n) = asymptote - scale * n ** -exponent`` (``scale`` >= 0: more photos never hurt)."""

    asymptote: float
    scale: float
    exponent: float

    def __call__(self, n: float | np.ndarray) -> np.ndarray:
        return np.clip(self.asymptote - self.scale * np.power(np.asarray(n, dtype=np.float64), -self.exponent), 0, 1)


def fit_power_law(sizes: Sequence[float], values: Sequence[float]) -> PowerLaw:
    """Least-squares inverse power law through ``(size, value)`` points, values in [0, 1].

    For each exponent of a grid, the asymptote and scale are a linear least-squares fit, kept within
    ``scale >= 0`` and ``asymptote <= 1``; the exponent with the smallest squared error wins. A flat or
    falling curve gives ``scale = 0`` (the projection stays at the mean).
    """
    n = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    flat = PowerLaw(float(y.mean()), 0.0, 1.0)
    if len(n) < 2 or np.ptp(n) == 0:
        return flat
    best, best_error = flat, float(((y - y.mean()) ** 2).sum())
    for exponent in EXPONENTS:
        basis = -np.power(n, -exponent)
        centred = basis - basis.mean()
        denominator = float((centred**2).sum())
        if denominator <= 0:
            continue
        scale = max(0.0, float((centred * (y - y.mean())).sum() / denominator))
        asymptote = float(y.mean() - scale * basis.mean())
        if asymptote > 1.0:  # accuracy cannot pass 1: refit the scale with the asymptote pinned there
            asymptote = 1.0
            scale = max(0.0, float(((1.0 - y) * -basis).sum() / (basis**2).sum()))
        error = float(((asymptote + scale * basis - y) ** 2).sum())
        if error < best_error - 1e-12:
            best, best_error = PowerLaw(asymptote, scale, float(exponent)), error
    return best


@dataclass(frozen=True)
class LearningCurve:
    """Measured points (photos, value), their fits and the projection of the overall accuracy.

    ``per_class`` counts the photos of that class; ``overall`` and ``projection`` all labelled photos.
    """

    overall: list[tuple[int, float]]
    per_class: dict[int, list[tuple[int, float]]]
    overall_fit: PowerLaw
    per_class_fit: dict[int, PowerLaw]
    projection: list[tuple[int, float]] = field(default_factory=list)


def nested_shares(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Row indices of stratified, nested shares of the photos: per class, the first ``fraction`` of one
    seeded permutation (at least two photos per class, so its k-fold accuracy can be measured)."""
    rng = np.random.default_rng(seed)
    orders = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    shares = []
    for fraction in fractions:
        rows = [order[: max(2, math.ceil(fraction * len(order) - 1e-9))] for order in orders.values()]
        shares.append(np.sort(np.concatenate(rows)))
    return shares


def _scores(result: OutOfFold, labels: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    predicted = result.logits.argmax(axis=1)
    recalls = np.full(num_classes, np.nan)
    for c in np.unique(labels):
        recalls[c] = float((predicted[labels == c] == c).mean())
    return float((predicted == labels).mean()), recalls


def learning_curve(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    fractions: Sequence[float] = FRACTIONS,
    repeats: int = 4,
    folds: int = 5,
    seed: int = 0,
    head: HeadOptions = HeadOptions(),
    full: OutOfFold | None = None,
) -> LearningCurve:
    """k-fold accuracy and per-class recall on growing shares of the labelled photos, fitted and projected.

    Args:
        features: ``[N, F]`` features of the labelled photos.
        labels: ``[N]`` class indices.
        num_classes: Head width.
        fractions: Shares of the photos measured (the last one should be 1.0, the whole dataset).
        repeats: Draws averaged per share below the whole.
        folds: k of each measurement.
        seed: Seeds the draws and the folds.
        head: The probe's options.
        full: The out-of-fold result on all photos when already computed (the whole-dataset point).

    Raises:
        InvalidDatasetError: fewer than two classes (see ``out_of_fold``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    sums: dict[float, list[tuple[float, np.ndarray, np.ndarray]]] = {f: [] for f in fractions}
    smallest = min(fractions)
    for draw in range(repeats):
        for fraction, rows in zip(fractions, nested_shares(labels, fractions, seed + draw)):
            # Larger shares overlap more from draw to draw, so they vary less: the smallest gets ``repeats``
            # draws, the others fewer in proportion to what they leave out (25/50/75 %: 4, 3, 2), the whole one.
            if draw >= math.ceil(repeats * (1.0 - fraction) / (1.0 - smallest) - 1e-9) and draw > 0:
                continue
            if fraction >= 1.0 and full is not None:
                result = full
            else:
                result = out_of_fold(features[rows], labels[rows], num_classes, folds=folds, seed=seed, head=head)
            accuracy, recalls = _scores(result, labels[rows], num_classes)
            sums[fraction].append((accuracy, recalls, np.bincount(labels[rows], minlength=num_classes)))
    overall: list[tuple[int, float]] = []
    per_class: dict[int, list[tuple[int, float]]] = {int(c): [] for c in np.unique(labels)}
    for fraction in fractions:
        runs = sums[fraction]
        counts = runs[0][2]
        overall.append((int(counts.sum()), round(float(np.mean([r[0] for r in runs])), 4)))
        recalls = np.mean([r[1] for r in runs], axis=0)
        for c in per_class:
            per_class[c].append((int(counts[c]), round(float(recalls[c]), 4)))
    overall_fit = fit_power_law(*zip(*overall))
    per_class_fit = {c: fit_power_law(*zip(*points)) for c, points in per_class.items()}
    total = overall[-1][0]
    projection = [(round(total * f), round(float(overall_fit(total * f)), 4)) for f in PROJECTION_FACTORS]
    return LearningCurve(overall, per_class, overall_fit, per_class_fit, projection)


# Smallest projected gain worth a sentence; the added shares tried, smallest first.
MIN_GAIN = 0.02
ADDED_SHARES = (0.25, 0.5, 1.0, 2.0, 3.0)


def _round_photos(n: float) -> int:
    step = 5 if n < 50 else 10 if n < 200 else 50
    return max(step, int(round(n / step)) * step)


def _added(fit: PowerLaw, have: int, now: float) -> tuple[int, float] | None:
    """The fewest photos to add (from ``ADDED_SHARES`` of ``have``) whose projected gain reaches
    ``MIN_GAIN``, with the value it projects to; ``None`` when even the largest share gains less."""
    for share in ADDED_SHARES:
        more = _round_photos(have * share)
        gain = float(fit(have + more) - fit(have))
        if gain >= MIN_GAIN:
            return more, min(1.0, now + gain)
    return None


def advice(curve: LearningCurve, class_names: Sequence[str], *, most: int = 3) -> list[str]:
    """The projection in words: how many more photos should lift the accuracy (and the weakest classes'
    recall) to what, or that more photos alone will add little."""
    lines = []
    total, accuracy = curve.overall[-1]
    found = _added(curve.overall_fit, total, accuracy)
    if found is None:
        ceiling = float(curve.overall_fit(total * 4))
        lines.append(
            f"the accuracy ({accuracy:.2f}) is levelling off: even {4 * total} photos project to about {ceiling:.2f}; "
            "fix suspect labels or add photos that differ from the ones you have"
        )
    else:
        more, to = found
        per_class = _round_photos(more / max(1, len(curve.per_class)))
        lines.append(
            f"about {more} more photos (about {per_class} per class) should lift the accuracy "
            f"from {accuracy:.2f} to about {to:.2f}"
        )
    gains = []
    for c, points in curve.per_class.items():
        have, recall = points[-1]
        step = _added(curve.per_class_fit[c], have, recall)
        if step is not None and recall < 0.98:
            gains.append((step[1] - recall, c, recall, step))
    for _, c, recall, (more, to) in sorted(gains, key=lambda g: (-g[0], g[1]))[:most]:
        lines.append(
            f"about {more} more photos of `{class_names[c]}` should lift its recall from {recall:.2f} to about {to:.2f}"
        )
    return lines

"""Linear probes on cached features, cross-validated: out-of-fold predictions and k-fold accuracy.

Every photo's out-of-fold prediction comes from a head that never saw it, so the predictions can
judge the photo's own label (suspect labels in ``insights``), the temperature fitted on them
describes unseen photos, and their per-fold accuracy estimates how well a head trained on all photos
generalises.

The head is multinomial logistic regression with an L2 penalty on per-dimension z-scored features,
fitted by L-BFGS; the k fold heads are fitted together in one batched run. Measured on cats_dogs and
flowers5 with 10 % of labels flipped (bench/insights_quality.py): a strong penalty (``l2=1.0``) ranks
flipped labels best and gives the best out-of-fold accuracy; L-BFGS stops on its own tolerance after
30-45 evaluations, well within ``max_iter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InvalidDatasetError
from .metrics import fit_temperature, softmax


@dataclass(frozen=True)
class HeadOptions:
    """Args:
    l2: Weight of ``0.5 * ||W||^2`` added to the mean cross-entropy (features are z-scored).
    max_iter: L-BFGS iterations.
    """

    l2: float = 1.0
    max_iter: int = 100


@dataclass(frozen=True, eq=False)
class SoftmaxHead:
    """A fitted linear head with the standardization it was fitted under (``[F]`` mean and scale)."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits ``[N, C]`` of raw features ``[N, F]``."""
        return ((features - self.mean) / self.scale) @ self.weight + self.bias


def standardization(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and scale of ``features``; constant dimensions get scale 1."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    return mean, np.where(scale > 1e-6, scale, 1.0)


def standardize(features: np.ndarray) -> np.ndarray:
    """Per-dimension z-scores of ``features`` over its own rows, as float32."""
    mean, scale = standardization(features)
    return ((features - mean) / scale).astype(np.float32)


def fit_softmax_head(
    features: np.ndarray, labels: np.ndarray, num_classes: int, options: HeadOptions = HeadOptions()
) -> SoftmaxHead:
    """Multinomial logistic regression on z-scored ``features`` (L2 penalty, full-batch L-BFGS).

    Args:
        features: ``[N, F]`` float features.
        labels: ``[N]`` class indices in ``[0, num_classes)``.
        num_classes: Width of the head (classes absent from ``labels`` get low logits).
        options: Penalty and iteration count.
    """
    labels = np.asarray(labels, dtype=np.int64)
    return fit_fold_heads(features, labels, np.ones((1, len(labels)), dtype=bool), num_classes, options)[0]


def fit_fold_heads(
    features: np.ndarray,
    labels: np.ndarray,
    train_masks: np.ndarray,
    num_classes: int,
    options: HeadOptions = HeadOptions(),
) -> list[SoftmaxHead]:
    """One head per row of ``train_masks``, each fitted on the photos its mask selects, all in one L-BFGS run.

    The heads' parameters are independent, so minimising the sum of their losses fits each one as if alone;
    one batched run is several times faster than one run per head (fewer, larger matrix products).
    Features are z-scored over all rows given (no label is involved), so every head shares one scale.

    Args:
        features: ``[N, F]`` float features.
        labels: ``[N]`` class indices in ``[0, num_classes)``.
        train_masks: ``[K, N]`` booleans, which rows each head trains on.
        num_classes: Width of every head.
        options: Penalty and iteration count.
    """
    mean, scale = standardization(features)
    x = torch.from_numpy(((features - mean) / scale).astype(np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).repeat(len(train_masks))
    masks = torch.from_numpy(np.asarray(train_masks, dtype=np.float32))
    weight = torch.zeros(len(masks), x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(len(masks), 1, num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=options.max_iter, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.einsum("nf,kfc->knc", x, weight) + bias
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, num_classes), y, reduction="none")
        mean_losses = (losses.view(len(masks), -1) * masks).sum(dim=1) / masks.sum(dim=1).clamp(min=1)
        loss = mean_losses.sum() + 0.5 * options.l2 * (weight * weight).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights, biases = weight.detach().double().numpy(), bias.detach().double().numpy()
    return [SoftmaxHead(mean=mean, scale=scale, weight=weights[k], bias=biases[k, 0]) for k in range(len(masks))]


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """A fold index in ``[0, folds)`` for every row, each class dealt round-robin in a seeded order."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        # Continuing the deal where the last class stopped keeps the folds' sizes within one.
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return assignment


@dataclass(frozen=True, eq=False)
class OutOfFold:
    """Out-of-fold predictions over labelled photos.

    Attributes:
        logits: ``[N, C]``; row i comes from the head fitted without i's fold.
        folds: ``[N]`` fold index of every row.
        heads: One head per fold (an ensemble for photos outside the folds, e.g. unlabelled ones).
        temperature: ``metrics.fit_temperature`` on ``logits``; divides logits of unseen photos.
    """

    logits: np.ndarray
    folds: np.ndarray
    heads: tuple[SoftmaxHead, ...]
    temperature: float

    def probabilities(self) -> np.ndarray:
        """Calibrated out-of-fold class probabilities ``softmax(logits / temperature)``."""
        return softmax(self.logits / self.temperature)

    def fold_accuracies(self, labels: np.ndarray) -> list[float]:
        """Accuracy of each fold's head on the photos it did not see."""
        correct = self.logits.argmax(axis=1) == labels
        return [float(correct[self.folds == k].mean()) for k in range(len(self.heads))]

    def ensemble_probabilities(self, features: np.ndarray) -> np.ndarray:
        """Mean calibrated probabilities of all fold heads on other photos ``[M, F]``."""
        return np.mean([softmax(h.logits(features) / self.temperature) for h in self.heads], axis=0)


def out_of_fold(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    head: HeadOptions = HeadOptions(),
) -> OutOfFold:
    """Stratified k-fold: fit a head on all folds but one, predict that one, for every fold.

    The fold count is lowered to the number of photos when there are fewer.

    Raises:
        InvalidDatasetError: fewer than two labelled photos or fewer than two classes among them.
    """
    labels = np.asarray(labels, dtype=np.int64)
    _check_labelled(features, labels, num_classes)
    k = min(folds, len(labels))
    assignment = stratified_folds(labels, k, seed)
    heads = fit_fold_heads(features, labels, np.stack([assignment != fold for fold in range(k)]), num_classes, head)
    logits = np.zeros((len(labels), num_classes))
    for fold, fitted in enumerate(heads):
        held = assignment == fold
        logits[held] = fitted.logits(features[held])
    return OutOfFold(logits, assignment, tuple(heads), fit_temperature(logits, labels.tolist()))


def _check_labelled(features: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    if features.ndim != 2 or len(features) != len(labels):
        raise InvalidDatasetError(
            f"expected features [N, F] and N labels, got features {features.shape} and {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InvalidDatasetError(f"labels must lie in [0, {num_classes}); drop unlabelled photos (-1) first")
    if len(np.unique(labels)) < 2:
        raise InvalidDatasetError("cross-validation needs labelled photos of at least two classes")


@dataclass(frozen=True)
class ProbeCvAccuracy:
    """The probe's k-fold accuracy (L-BFGS heads; the insights' ``cv_accuracy``): ``mean`` and ``std``
    (population) of the per-fold accuracies in ``folds``. Not a model's ``metrics.cv_accuracy``, which
    comes from SGD heads trained with the model's own recipe (``ml.crossval``)."""

    mean: float
    std: float
    folds: tuple[float, ...]

    @classmethod
    def of(cls, fold_accuracies: Sequence[float]) -> ProbeCvAccuracy:
        values = np.asarray(fold_accuracies, dtype=np.float64)
        return cls(
            mean=round(float(values.mean()), 4),
            std=round(float(values.std()), 4),
            folds=tuple(round(float(v), 4) for v in values),
        )


def probe_cv_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int = 5,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    head: HeadOptions = HeadOptions(),
) -> ProbeCvAccuracy:
    """Stratified k-fold accuracy of the linear head on ``features`` (training photos only, never the test split).

    Args:
        features: ``[N, F]`` plain-view features of labelled photos.
        labels: ``[N]`` class indices.
        folds: k (lowered to N when there are fewer photos).
        num_classes: Head width; default ``max(labels) + 1``.
        seed: Seeds the fold assignment.
        head: The head's options.

    Raises:
        InvalidDatasetError: see ``out_of_fold``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    classes = num_classes if num_classes is not None else int(labels.max(initial=0)) + 1
    result = out_of_fold(features, labels, classes, folds=folds, seed=seed, head=head)
    return ProbeCvAccuracy.of(result.fold_accuracies(labels))

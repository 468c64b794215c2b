"""Out-of-fold heads: every training image is predicted by a head that never trained on it.

The folds are over images (all views of an image stay in one fold), stratified by class and fixed by
content, so the same photos give the same folds whatever order they come in. The heads train as the
final head does (SGD, same epochs, learning rate, momentum, batch size and class weights), all k of
them at once as one batched layer in which head k never sees fold k, so cross-validation costs about
one more head's training, not k. Their out-of-fold logits describe the final head on unseen photos:
the temperature is fitted on them, and their per-fold accuracy is ``metrics.cv_accuracy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import LabelledImage, content_score
from .recipe import Recipe
from .sgd import LinearHeads


@dataclass(frozen=True, eq=False)
class CrossValidation:
    """Out-of-fold predictions on the plain view of every image, with per-fold accuracy: SGD heads of the
    model's own recipe, a model's ``metrics.cv_accuracy`` (the insights' figure is the L-BFGS probe's,
    ``linear_probe.ProbeCvAccuracy``)."""

    logits: np.ndarray
    labels: list[int]
    folds: np.ndarray
    fold_accuracies: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_accuracies))

    def summary(self) -> dict[str, Any]:
        """``{mean, std, folds}`` as stored in ``metrics.cv_accuracy``."""
        return {
            "mean": round(self.mean, 4),
            "std": round(self.std, 4),
            "folds": [round(a, 4) for a in self.fold_accuracies],
        }


def assign_folds(items: Sequence[LabelledImage], folds: int, seed: int) -> np.ndarray:
    """A fold index per image: within each class, images in content-score order are dealt round-robin
    (continuing where the previous class stopped, so fold sizes differ by at most one)."""
    assignment = np.zeros(len(items), dtype=np.int64)
    by_class: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_class.setdefault(item.label, []).append(index)
    offset = 0
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda i: content_score(items[i].sha256, seed=seed, purpose="fold"))
        for rank, index in enumerate(members):
            assignment[index] = (rank + offset) % folds
        offset += len(members)
    return assignment


def cross_validate(
    x: torch.Tensor,
    labels: torch.Tensor,
    items: Sequence[LabelledImage],
    recipe: Recipe,
    *,
    views: int,
    num_classes: int,
    class_weights: torch.Tensor | None = None,
    folds: int = 5,
) -> CrossValidation | None:
    """Train one head per fold on the other folds' images (all their views), predict the fold's plain views.

    Args:
        x: ``[len(items) * views, F]`` features, the views of one image next to each other (plain first).
        labels: The label of every row of ``x``.
        items: The images, in the order of ``x``.
        recipe: How every fold's head trains (epochs, lr, momentum, batch size, seed), as the final head.

    Returns:
        The out-of-fold predictions, or ``None`` when the smallest class has fewer than two images
        (no fold could both train on and test that class).
    """
    image_labels = [item.label for item in items]
    smallest = min(image_labels.count(label) for label in set(image_labels)) if image_labels else 0
    k = min(folds, smallest)
    if k < 2:
        return None
    assignment = assign_folds(items, k, recipe.seed)
    weight, bias = _fit_heads(
        x,
        labels,
        torch.from_numpy(np.repeat(assignment, views)).to(x.device),
        k,
        num_classes,
        recipe,
        class_weights=class_weights,
    )
    with torch.inference_mode():
        plain = x[::views]
        own = torch.from_numpy(assignment).to(x.device)
        logits = (torch.einsum("bf,bcf->bc", plain, weight[own]) + bias[own]).cpu().double().numpy()
    truth = np.asarray(image_labels)
    correct = logits.argmax(1) == truth
    accuracies = [float(correct[assignment == fold].mean()) for fold in range(k)]
    return CrossValidation(logits=logits, labels=image_labels, folds=assignment, fold_accuracies=accuracies)


def _fit_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    row_fold: torch.Tensor,
    k: int,
    num_classes: int,
    recipe: Recipe,
    *,
    class_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` linear heads ``[k, C, F]``, ``[k, C]`` trained at once; head j's loss leaves out fold j's rows."""
    generator = torch.Generator().manual_seed(recipe.seed)
    bound = 1 / math.sqrt(x.shape[1])  # nn.Linear's default initialisation
    weight = ((torch.rand(k, num_classes, x.shape[1], generator=generator) * 2 - 1) * bound).to(x.device)
    bias = ((torch.rand(k, num_classes, generator=generator) * 2 - 1) * bound).to(x.device)
    sgd = LinearHeads(weight, bias, lr=recipe.lr, momentum=recipe.momentum)
    heads = torch.arange(k, device=x.device).view(k, 1)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(y), generator=generator).to(x.device)
        for start in range(0, len(order), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            keep = (row_fold[index].view(1, -1) != heads).float()
            if class_weights is not None:  # as CrossEntropyLoss(weight=...): a weighted mean
                keep = keep * class_weights[y[index]].view(1, -1)
            sgd.step(x[index], y[index], keep)
    return weight, bias

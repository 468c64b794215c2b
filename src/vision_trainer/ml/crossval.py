"""Out-of-fold heads: every training image is predicted by a head that never trained on it.

The folds are over images (all views of an image stay in one fold) and are fixed by content: an
image's fold follows from a seeded hash of its content hash, so the same photos give the same folds
whatever order they come in. The heads train exactly as the final head does (SGD, same epochs,
learning rate, momentum, batch size and class weights), so the out-of-fold logits describe the final
head on unseen photos: the temperature is fitted on them, and their per-fold accuracy is
``metrics.cv_accuracy``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import LabelledImage


@dataclass(frozen=True, eq=False)
class CrossValidation:
    """Out-of-fold predictions on the plain view of every image, with per-fold accuracy."""

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
        return {"mean": round(self.mean, 4), "std": round(self.std, 4),
                "folds": [round(a, 4) for a in self.fold_accuracies]}


def assign_folds(items: Sequence[LabelledImage], folds: int, seed: int) -> np.ndarray:
    """A fold index per image, stratified by class and fixed by content (not by order)."""
    assignment = np.zeros(len(items), dtype=np.int64)
    by_class: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_class.setdefault(item.label, []).append(index)
    for members in by_class.values():
        ranked = sorted(members, key=lambda i: hashlib.sha256(f"{seed}:{items[i].sha256}".encode()).hexdigest())
        for position, index in enumerate(ranked):
            assignment[index] = position % folds
    return assignment


def cross_validate(
    x: torch.Tensor,
    labels: torch.Tensor,
    items: Sequence[LabelledImage],
    *,
    views: int,
    num_classes: int,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    seed: int,
    class_weights: torch.Tensor | None = None,
    folds: int = 5,
) -> CrossValidation | None:
    """Train one head per fold on the other folds' images (all their views), predict the fold's plain views.

    Args:
        x: ``[len(items) * views, F]`` features, the views of one image next to each other (plain first).
        labels: The label of every row of ``x``.
        items: The images, in the order of ``x``.

    Returns:
        The out-of-fold predictions, or ``None`` when the smallest class has fewer than two images
        (no fold could both train on and test that class).
    """
    image_labels = [item.label for item in items]
    smallest = min(image_labels.count(label) for label in set(image_labels)) if image_labels else 0
    k = min(folds, smallest)
    if k < 2:
        return None
    assignment = assign_folds(items, k, seed)
    row_fold = np.repeat(assignment, views)
    plain_rows = np.arange(len(items)) * views
    logits = np.zeros((len(items), num_classes))
    accuracies = []
    for fold in range(k):
        train_rows = torch.from_numpy(np.flatnonzero(row_fold != fold)).to(x.device)
        head = _train_head(x[train_rows], labels[train_rows], num_classes, epochs=epochs, lr=lr, momentum=momentum,
                           batch_size=batch_size, seed=seed, class_weights=class_weights)
        held = np.flatnonzero(assignment == fold)
        with torch.inference_mode():
            fold_logits = head(x[torch.from_numpy(plain_rows[held]).to(x.device)]).cpu().double().numpy()
        logits[held] = fold_logits
        accuracies.append(float((fold_logits.argmax(1) == np.asarray(image_labels)[held]).mean()))
    return CrossValidation(logits=logits, labels=image_labels, folds=assignment, fold_accuracies=accuracies)


def _train_head(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    seed: int,
    class_weights: torch.Tensor | None,
) -> nn.Linear:
    torch.manual_seed(seed)
    head = nn.Linear(x.shape[1], num_classes).to(x.device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum)
    criterion = nn.CrossEntropyLoss(weight=class_weights)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator).to(x.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = criterion(head(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()

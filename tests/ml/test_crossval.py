"""Out-of-fold heads: each image is predicted by a head that never trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vision_trainer.ml.crossval import assign_folds, cross_validate
from vision_trainer.ml.data import LabelledImage
from vision_trainer.ml.recipe import Recipe


def items(labels: list[int]) -> list[LabelledImage]:
    return [LabelledImage(Path(f"{i}.img"), label, f"{i:064x}") for i, label in enumerate(labels)]


def test_folds_are_stratified_and_fixed_by_content() -> None:
    data = items([0] * 20 + [1] * 10)
    folds = assign_folds(data, 5, seed=0)
    for k in range(5):
        members = [data[i].label for i in np.flatnonzero(folds == k)]
        assert members.count(0) == 4 and members.count(1) == 2
    assert (assign_folds(list(reversed(data)), 5, seed=0) == folds[::-1]).all()
    assert not (assign_folds(data, 5, seed=1) == folds).all()


def test_memorised_noise_is_not_predicted_out_of_fold() -> None:
    """Random labels on random features: a head fits them in-sample, but no head can predict the images
    it never saw better than chance."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 512, generator=generator)
    labels = torch.randint(0, 2, (200,), generator=generator)
    cv = cross_validate(
        x,
        labels,
        items(labels.tolist()),
        Recipe(epochs=60, lr=0.05, momentum=0.9, batch_size=32, seed=0),
        views=1,
        num_classes=2,
    )
    assert cv is not None and len(cv.fold_accuracies) == 5
    assert 0.3 < cv.mean < 0.7
    separable = x[:, :1] * 0 + labels.view(-1, 1).float() * 4 - 2 + torch.randn(200, 1, generator=generator) * 0.1
    clean = cross_validate(
        torch.cat([separable, x[:, :8]], 1),
        labels,
        items(labels.tolist()),
        Recipe(epochs=20, lr=0.05, momentum=0.9, batch_size=32, seed=0),
        views=1,
        num_classes=2,
    )
    assert clean is not None and clean.mean > 0.95 and clean.logits.shape == (200, 2)


def test_too_small_classes_give_no_folds() -> None:
    x = torch.randn(5, 8)
    assert (
        cross_validate(
            x,
            torch.tensor([0, 0, 0, 0, 1]),
            items([0, 0, 0, 0, 1]),
            Recipe(epochs=1, lr=0.01, momentum=0.9, batch_size=4, seed=0),
            views=1,
            num_classes=2,
        )
        is None
    )

"""Labelled image sets: duplicate removal, stratified seeded split, transforms, datasets."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from .errors import InvalidDatasetError
from .images import open_image


@dataclass(frozen=True)
class LabelledImage:
    """One stored image: where it is, its class index, and its content hash."""

    path: Path
    label: int
    sha256: str


@dataclass(frozen=True)
class Split:
    """Disjoint train and test sets."""

    train: list[LabelledImage]
    test: list[LabelledImage]


def drop_duplicates(items: Sequence[LabelledImage]) -> tuple[list[LabelledImage], int]:
    """Keep the first image of each content hash.

    Returns:
        The unique images in their original order, and how many were dropped.
    """
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.sha256 not in seen:
            seen.add(item.sha256)
            unique.append(item)
    return unique, len(items) - len(unique)


def stratified_split(items: Sequence[LabelledImage], *, test_fraction: float, seed: int) -> Split:
    """Split every class on its own, reproducibly.

    Each class with at least two images keeps at least one image on each side. The same images and
    seed always give the same split, whatever order the images came in.

    Raises:
        InvalidDatasetError: ``test_fraction`` is not strictly between 0 and 1.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InvalidDatasetError(f"test fraction must be between 0 and 1, got {test_fraction}")
    by_class: dict[int, list[LabelledImage]] = {}
    for item in sorted(items, key=lambda i: (i.label, i.sha256, str(i.path))):
        by_class.setdefault(item.label, []).append(item)
    rng = random.Random(seed)
    train: list[LabelledImage] = []
    test: list[LabelledImage] = []
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        n_test = round(len(members) * test_fraction) if len(members) >= 2 else 0
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return Split(train=train, test=test)


def train_transform(preprocessing: Mapping[str, Any]) -> T.Compose:
    """The seed's augmentation: random resized crop, flip, rotation, colour jitter, normalize."""
    return T.Compose(
        [
            T.RandomResizedCrop(preprocessing["input_size"]),
            T.RandomHorizontalFlip(),
            T.RandomRotation(15),
            T.ColorJitter(0.2, 0.2, 0.2),
            T.ToTensor(),
            T.Normalize(preprocessing["mean"], preprocessing["std"]),
        ]
    )


def eval_transform(preprocessing: Mapping[str, Any]) -> T.Compose:
    """Resize the shorter side, centre crop, normalize: used for test images and prediction."""
    return T.Compose(
        [
            T.Resize(preprocessing["resize_size"]),
            T.CenterCrop(preprocessing["input_size"]),
            T.ToTensor(),
            T.Normalize(preprocessing["mean"], preprocessing["std"]),
        ]
    )


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Decodes stored images on demand and applies ``transform``."""

    def __init__(self, items: Sequence[LabelledImage], transform: T.Compose, *, draft_size: int) -> None:
        self.items = list(items)
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        image = open_image(item.path, draft_size=self.draft_size)
        return self.transform(image), item.label

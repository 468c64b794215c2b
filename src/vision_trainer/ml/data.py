"""Labelled image sets: duplicate removal, stable content-hash split, transforms, datasets."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from .errors import InvalidDatasetError
from .images import open_image


@dataclass(frozen=True)
class LabelledImage:
    """One stored image: where it is, its class index, its content hash and the client's filename."""

    path: Path
    label: int
    sha256: str
    name: str = ""


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


def content_score(sha256: str, *, seed: int, purpose: str) -> float:
    """A number in [0, 1) fixed by an image's content, the seed and what it is drawn for."""
    digest = hashlib.sha256(f"{purpose}:{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def stable_split(
    items: Sequence[LabelledImage], *, test_fraction: float, seed: int, purpose: str = "test", min_class_size: int = 2
) -> Split:
    """Split every class by content: an image is held out when its seeded content score falls below
    ``test_fraction``.

    Unlike ranking within a class, this never moves an image that was on the train side to the held-out
    side when other images are added, so versions of a growing dataset are compared on stable ground.
    A class of at least ``min_class_size`` images keeps at least one image on each side: if none scores
    below the fraction its lowest-scoring image is held out, if all do its highest-scoring one trains.

    Raises:
        InvalidDatasetError: ``test_fraction`` is not strictly between 0 and 1.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InvalidDatasetError(f"test fraction must be between 0 and 1, got {test_fraction}")
    by_class: dict[int, list[tuple[float, LabelledImage]]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append((content_score(item.sha256, seed=seed, purpose=purpose), item))
    held: set[int] = set()
    for members in by_class.values():
        members.sort(key=lambda pair: (pair[0], pair[1].sha256, str(pair[1].path)))
        if len(members) < min_class_size:
            continue
        n_held = sum(score < test_fraction for score, _ in members)
        n_held = min(max(n_held, 1), len(members) - 1)
        held.update(id(item) for _, item in members[:n_held])
    return Split(train=[i for i in items if id(i) not in held], test=[i for i in items if id(i) in held])


def validation_fold(train: Sequence[LabelledImage], *, fraction: float, seed: int, min_class_size: int = 4) -> Split:
    """Carve a validation fold out of a training split (returned as ``Split(train, test=fold)``), chosen by
    content like ``stable_split`` so it too stays put as a dataset grows.

    Classes with fewer than ``min_class_size`` training images give none: with so few images every
    one is needed to train. The fold tunes things (the temperature) that must not see the test split.
    """
    if fraction <= 0:
        return Split(train=list(train), test=[])
    return stable_split(train, test_fraction=fraction, seed=seed, purpose="validation", min_class_size=min_class_size)


def train_transform(preprocessing: Mapping[str, Any]) -> T.Compose:
    """The seed's full training pipeline, float output: augmentation, ``ToTensor``, ``Normalize``."""
    return T.Compose([*_augment(preprocessing), T.ToTensor(), T.Normalize(preprocessing["mean"], preprocessing["std"])])


def eval_transform(preprocessing: Mapping[str, Any]) -> T.Compose:
    """The seed's full evaluation pipeline, float output: resize, centre crop, ``ToTensor``, ``Normalize``."""
    return T.Compose(
        [*_resize_crop(preprocessing), T.ToTensor(), T.Normalize(preprocessing["mean"], preprocessing["std"])]
    )


def augment_view(preprocessing: Mapping[str, Any]) -> T.Compose:
    """One random augmented view as uint8 ``[3, S, S]``; ``Normalizer`` finishes it on the batch."""
    return T.Compose([*_augment(preprocessing), T.PILToTensor()])


def plain_view(preprocessing: Mapping[str, Any]) -> T.Compose:
    """Resize the shorter side and centre crop, as uint8 ``[3, S, S]`` (test images and prediction)."""
    return T.Compose([*_resize_crop(preprocessing), T.PILToTensor()])


def _augment(preprocessing: Mapping[str, Any]) -> list[Any]:
    return [
        T.RandomResizedCrop(preprocessing["input_size"]),
        T.RandomHorizontalFlip(),
        T.RandomRotation(15),
        T.ColorJitter(0.2, 0.2, 0.2),
    ]


def _resize_crop(preprocessing: Mapping[str, Any]) -> list[Any]:
    return [T.Resize(preprocessing["resize_size"]), T.CenterCrop(preprocessing["input_size"])]


class Normalizer:
    """uint8 image batch -> float, scaled to [0, 1] and normalized with the backbone's mean/std.

    Equal to ``ToTensor`` + ``Normalize`` per image (to float32 rounding, 5e-7), done once per batch as one
    multiply and one add in place: ``(x / 255 - mean) / std`` written out took 8x as long (measured at
    7 ms per batch of 16 views, between the backbone's forward passes).
    """

    def __init__(self, preprocessing: Mapping[str, Any]) -> None:
        mean = torch.tensor(preprocessing["mean"], dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(preprocessing["std"], dtype=torch.float64).view(1, 3, 1, 1)
        self.scale = (1.0 / (255.0 * std)).float()
        self.shift = (-mean / std).float()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.float().mul_(self.scale).add_(self.shift)


_AUGMENT_LOCK = threading.Lock()


def view_seed(sha256: str, view: int, seed: int) -> int:
    """The random seed of augmented view ``view`` of an image: fixed by its content, so the view (and
    its cached features) is the same in every job and process."""
    return int.from_bytes(hashlib.sha256(f"view:{seed}:{view}:{sha256}".encode()).digest()[:8], "big")


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Decodes each stored image once and returns every view of it: uint8 ``[len(views), 3, S, S]``.

    ``view_numbers[v]`` set makes view ``v`` a seeded random view: torch's random state is set from the
    image's content hash, the view number and ``seed`` while it is drawn, so it can be cached.
    """

    def __init__(
        self,
        items: Sequence[LabelledImage],
        views: Sequence[Callable[[Image.Image], torch.Tensor]],
        *,
        draft_size: int,
        view_numbers: Sequence[int | None] | None = None,
        seed: int = 0,
    ) -> None:
        self.items = list(items)
        self.views = list(views)
        self.draft_size = draft_size
        self.view_numbers = list(view_numbers) if view_numbers is not None else [None] * len(self.views)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        image = open_image(item.path, draft_size=self.draft_size)
        return torch.stack([self._view(image, item, v) for v in range(len(self.views))]), item.label

    def _view(self, image: Image.Image, item: LabelledImage, v: int) -> torch.Tensor:
        number = self.view_numbers[v]
        if number is None:
            return self.views[v](image)
        # torchvision's random transforms draw from torch's global generator: seed it for this view
        # alone, and put back whatever state other code in this process had.
        with _AUGMENT_LOCK, torch.random.fork_rng(devices=[]):
            # The CPU generator alone: torch.manual_seed also queues seeds for CUDA, XPU and MTIA, each
            # with a stack trace kept, a third of a millisecond per view.
            torch.default_generator.manual_seed(view_seed(item.sha256, number, self.seed))
            return self.views[v](image)

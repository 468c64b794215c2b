"""Novelty and the learning curve on real photos' features: satellite photos as the training photos,
flowers as the unfamiliar ones."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import dataset_dir, photos
from vision_trainer.ml.backbones import pretrained_backbone, resolve_backbone
from vision_trainer.ml.data import ImageDataset, LabelledImage, Normalizer, plain_view
from vision_trainer.ml.features import extract_features
from vision_trainer.ml.learning_curve import fit_power_law, learning_curve, nested_shares
from vision_trainer.ml.linear_probe import out_of_fold
from vision_trainer.ml.novelty import Novelty, novelty_reference
from vision_trainer.ml.runtime import RuntimeOptions, build_extractor

pytestmark = pytest.mark.slow
PER_CLASS = 24


def features_of(paths: list) -> np.ndarray:
    spec = resolve_backbone("efficientnet_lite0")
    extractor = build_extractor(pretrained_backbone(spec), name=spec.name, input_size=224, options=RuntimeOptions())
    prep = spec.preprocessing()
    items = [LabelledImage(path=p, label=0, sha256="") for p in paths]
    dataset = ImageDataset(items, [plain_view(prep)], draft_size=spec.resize_size)
    x, _ = extract_features(extractor, dataset, normalize=Normalizer(prep), device="cpu", batch_size=16)
    return x.numpy()


@pytest.fixture(scope="module")
def satellite() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train features, their labels, held-out features)`` of the 10 EuroSAT classes."""
    classes = sorted(d.name for d in dataset_dir("eurosat_rgb", "train").iterdir() if d.is_dir())
    train = [p for c in classes for p in photos("eurosat_rgb", "train", c, count=PER_CLASS)]
    labels = np.repeat(np.arange(len(classes)), PER_CLASS)
    held = [p for c in classes for p in photos("eurosat_rgb", "val", c, count=4)]
    x = features_of(train + held)
    return x[: len(train)], labels, x[len(train) :]


def test_photos_of_another_dataset_are_novel_at_the_calibrated_threshold(satellite) -> None:
    train, labels, held = satellite
    stored = novelty_reference(train, labels)
    novelty = Novelty.from_stored(stored, feature_size=train.shape[1])
    assert stored["calibrated_on"] == len(train) and stored["reference"].dtype.is_floating_point
    flowers = features_of([p for c in ("daisy", "rose", "tulip") for p in photos("flowers5", c, count=8)])
    assert (novelty.scores(flowers) > novelty.threshold).mean() >= 0.9
    assert (novelty.scores(held) > novelty.threshold).mean() <= 0.15  # 40 photos: 5 % calibrated, noisy
    assert novelty.summary(held)["test_count"] == len(held)
    with pytest.raises(ValueError, match="features"):
        Novelty.from_stored(stored, feature_size=512)


def test_the_projection_from_half_the_photos_lands_near_the_full_size_accuracy(satellite) -> None:
    train, labels, _ = satellite
    full = out_of_fold(train, labels, 10)
    real = float((full.logits.argmax(axis=1) == labels).mean())
    half = nested_shares(labels, [0.5], seed=7)[0]
    curve = learning_curve(train[half], labels[half], 10)
    assert [n for n, _ in curve.overall] == [30, 60, 90, 120]
    assert abs(float(curve.overall_fit(len(labels))) - real) <= 0.05, (curve.overall, real)
    assert curve.projection[-1][0] == 4 * 120


def test_the_power_law_recovers_a_known_curve_and_stays_flat_on_noise() -> None:
    sizes = np.array([50, 100, 150, 200])
    truth = 0.95 - 1.5 * sizes**-0.6
    fitted = fit_power_law(sizes, truth)
    assert abs(float(fitted(800)) - (0.95 - 1.5 * 800**-0.6)) < 0.005
    assert float(fit_power_law(sizes, [0.8, 0.78, 0.8, 0.79])(800)) <= 0.82  # no gain invented from noise

"""The tuned top (``ml.tuning``): the frozen trunk and top reproduce the backbone, activations are cached
as float16, and ``tune=auto`` decides on training photos only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import image_bytes
from vision_trainer.ml import tuned
from vision_trainer.ml.backbones import create_backbone, freeze, resolve_backbone
from vision_trainer.ml.checkpoint import build_head_checkpoint, full_checkpoint
from vision_trainer.ml.data import LabelledImage, Split, stratified_split
from vision_trainer.ml.depths import depth_extractor
from vision_trainer.ml.predictor import Predictor
from vision_trainer.ml.recipe import Compute, Recipe
from vision_trainer.ml.runtime import RuntimeOptions
from vision_trainer.ml.training import TrainingHooks, train_classifier
from vision_trainer.ml.tuning import Trunk, activation_shape, build_top, cut_point, load_top
from vision_trainer.store.feature_cache import FeatureFileCache

RANDOM = Compute(pretrained=False)
TORCH = RuntimeOptions(kind="torch")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_trunk_then_frozen_top_give_the_backbones_own_features(name: str) -> None:
    spec = resolve_backbone(name)
    torch.manual_seed(0)
    backbone = freeze(create_backbone(spec, num_classes=None, pretrained=False))
    for cut in spec.cut_points:
        trunk = Trunk(backbone, cut, spec.feature_stages).eval()
        top = build_top(backbone, cut, activation_shape(trunk, spec.input_size))
        x = torch.randn(2, 3, spec.input_size, spec.input_size)
        with torch.inference_mode():
            expected = depth_extractor(spec, backbone)(x)
            assert torch.allclose(top(trunk(x)), expected, atol=1e-4), cut.name
        # the tuned state goes under the backbone's own keys and loads back
        state = top.tuned_state()
        assert set(state) <= set(backbone.state_dict()) and all(k.startswith(cut.layers) for k in state)
        again = load_top(backbone, cut, top.shape, state)
        with torch.inference_mode():
            assert torch.equal(again(trunk(x)), top(trunk(x)))


def test_an_unknown_cut_point_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="choose one of: conv_head, blocks.6"):
        cut_point(resolve_backbone("efficientnet_lite0"), "layer4")
    assert cut_point(resolve_backbone("resnet18"), None).name == "layer4"


def test_the_cache_keeps_float16_activations_as_float16(tmp_path: Path) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    key = f"fp/{'a' * 64}/plain"
    value = np.linspace(-3, 3, 1000).astype(np.float16)
    cache.put(key, value)
    read = cache.get(key)
    assert read is not None and read.dtype == np.float16 and np.array_equal(read, value)
    assert cache.path(key).stat().st_size < 1000 * 2 + 256  # two bytes a value
    cache.put(key, value.astype(np.float32))
    read = cache.get(key)
    assert read is not None and read.dtype == np.float32


def _stripes(root: Path, per_class: int) -> list[LabelledImage]:
    """Two classes that differ only in a thin pattern: random features do not separate them at once."""
    items = []
    for label in (0, 1):
        for i in range(per_class):
            path = root / f"{label}_{i}.png"
            path.write_bytes(image_bytes((120 + 10 * label, 120, 120), size=48, noise=40, seed=i + 100 * label))
            items.append(LabelledImage(path, label, hashlib.sha256(path.read_bytes()).hexdigest()))
    return items


def test_auto_decides_on_training_photos_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrambling the test split's labels changes the test accuracy, never what auto chooses or why."""
    monkeypatch.setattr(tuned, "AUTO_MIN_VALIDATION", 1)  # a fold of a few photos decides here
    split = stratified_split(_stripes(tmp_path, 14), test_fraction=0.25, seed=0)
    scrambled = Split(
        train=split.train,
        test=[LabelledImage(i.path, 1 - i.label, i.sha256, i.name) for i in split.test],
    )
    recipe = Recipe(epochs=3, tune="auto", tune_epochs=2, lr=0.001, augment_views=0)
    runs = []
    for candidate in (split, scrambled):
        lines: list[str] = []
        result = train_classifier(
            resolve_backbone("efficientnet_lite0"),
            candidate,
            ["a", "b"],
            recipe,
            RANDOM,
            TrainingHooks(log=lines.append),
        )
        runs.append((result.metrics["tuning"], [line for line in lines if line.startswith(("Tune", "Tuned conv"))]))
    (first, first_lines), (second, second_lines) = runs
    assert first == second and first_lines == second_lines and first_lines
    assert first["kept"] in ("head", "top") and first["tune"] == "auto" and "validation_accuracy" in first


def test_auto_keeps_the_head_when_the_validation_fold_would_be_too_small(tmp_path: Path) -> None:
    split = stratified_split(_stripes(tmp_path, 14), test_fraction=0.25, seed=0)
    lines: list[str] = []
    recipe = Recipe(epochs=2, tune="auto", augment_views=0)
    result = train_classifier(
        resolve_backbone("efficientnet_lite0"), split, ["a", "b"], recipe, RANDOM, TrainingHooks(log=lines.append)
    )
    tuning = result.metrics["tuning"]
    assert tuning["kept"] == "head" and tuning["why"] == "validation_fold_too_small"
    assert 0 < tuning["validation_count"] < tuned.AUTO_MIN_VALIDATION and result.tuned_state is None
    assert any(line.startswith("Tune auto: keeping the head; its validation fold would hold") for line in lines)


def test_tune_full_trains_every_layer_and_serves_as_its_full_checkpoint(tmp_path: Path) -> None:
    split = stratified_split(_stripes(tmp_path, 8), test_fraction=0.25, seed=0)
    spec = resolve_backbone("efficientnet_lite0")
    recipe = Recipe(tune="full", tune_epochs=2, augment_views=0)
    lines: list[str] = []
    result = train_classifier(spec, split, ["a", "b"], recipe, RANDOM, TrainingHooks(log=lines.append))
    torch.manual_seed(0)
    backbone = freeze(create_backbone(spec, num_classes=None, pretrained=False))
    assert result.tune_cut == "full" and result.tuned_state is not None and result.feature_stages == []
    assert set(result.tuned_state) == set(backbone.state_dict())  # every layer is the model's own
    tuning = result.metrics["tuning"]
    assert tuning["tune"] == "full" and tuning["kept"] == "top" and tuning["epochs"] == 2
    assert any(line.startswith("Fine-tuning end to end on cpu: about ") for line in lines)
    assert [line.split(" Loss")[0] for line in lines if line.startswith("Tuned epoch")] == [
        "Tuned epoch 1/2",
        "Tuned epoch 2/2",
    ]
    assert len(result.history) == 2 and result.metrics["calibration"]["fitted_on"] == "validation_fold"
    head = build_head_checkpoint(
        head_state_dict=result.head_state,
        class_names=["a", "b"],
        backbone=spec.name,
        backbone_fingerprint=result.backbone_fingerprint,
        preprocessing=spec.preprocessing(),
        temperature=result.temperature,
        feature_stages=result.feature_stages,
        tuned_state_dict=result.tuned_state,
        tune_cut=result.tune_cut,
    )
    served = Predictor.from_head(head, backbone, runtime=TORCH)
    whole = Predictor.from_checkpoint(full_checkpoint(head, backbone.state_dict()), runtime=TORCH)
    images = [Image.open(item.path).convert("RGB") for item in split.test]
    assert torch.allclose(served.probabilities(images), whole.probabilities(images), atol=1e-5)


def test_tune_top_stores_its_layers_and_counts_them_in_images_through_the_backbone(tmp_path: Path) -> None:
    split = stratified_split(_stripes(tmp_path, 10), test_fraction=0.25, seed=0)
    cache = FeatureFileCache(tmp_path / "cache", max_bytes=1 << 28)
    recipe = Recipe(epochs=2, tune="top", tune_epochs=2, lr=0.001, augment_views=1)
    lines: list[str] = []
    spec = resolve_backbone("efficientnet_lite0")
    result = train_classifier(spec, split, ["a", "b"], recipe, RANDOM, TrainingHooks(log=lines.append), cache=cache)
    assert result.tune_cut == "conv_head" and result.tuned_state is not None
    assert {k.split(".")[0] for k in result.tuned_state} == {"conv_head", "bn2"}
    tuning = result.metrics["tuning"]
    views = 2 * len(result.fit_items) + len(result.validation_items) + len(split.test)
    assert tuning["activations_computed"] == views == result.metrics["images_through_backbone"]
    assert sum(line.startswith("Tuned epoch ") for line in lines) == 2
    assert result.metrics["calibration"]["fitted_on"] == "validation_fold"
    again = train_classifier(spec, split, ["a", "b"], recipe, RANDOM, TrainingHooks(), cache=cache)
    assert again.metrics["tuning"]["activations_computed"] == 0
    assert again.metrics["tuning"]["activations_reused"] == views
    for key, value in result.tuned_state.items():
        assert torch.equal(value, again.tuned_state[key]), key  # the same photos give the same top

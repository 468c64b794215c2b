from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import photos
from vision_trainer.ml.backbones import (
    create_backbone,
    freeze,
    list_backbones,
    map_state_dict_by_position,
    resolve_backbone,
    weights_available,
)
from vision_trainer.ml.data import eval_transform
from vision_trainer.ml.errors import UnknownBackboneError, WeightsUnavailableError

CAT_CLASSES = range(281, 286)
DOG_CLASSES = range(151, 269)


@pytest.mark.parametrize("name", list_backbones())
def test_registry_entry_builds_feature_extractor_and_head(name: str) -> None:
    spec = resolve_backbone(name)
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    extractor = freeze(create_backbone(spec, num_classes=None, pretrained=False))
    classifier = freeze(create_backbone(spec, num_classes=3, pretrained=False))
    with torch.inference_mode():
        assert extractor(x).shape == (2, spec.feature_size)
        assert classifier(x).shape == (2, 3)
    assert f"{spec.head_attr}.weight" in classifier.state_dict()
    assert all(not p.requires_grad for p in extractor.parameters())
    assert len(spec.mean) == len(spec.std) == 3 and spec.resize_size >= spec.input_size


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(UnknownBackboneError, match="resnet18, efficientnet_lite0"):
        resolve_backbone("vgg16")


@pytest.mark.parametrize(
    ("name", "input_size", "resize_size"),
    [("efficientnet_lite0", 224, 256), ("efficientnet_lite1", 240, 272), ("efficientnet_lite2", 260, 292)],
)
def test_efficientnet_lite_preprocessing_is_tensorflows(name: str, input_size: int, resize_size: int) -> None:
    """TF's EfficientNet evaluation: centre crop of input / (input + 32), pixels as (x - 127) / 128."""
    spec = resolve_backbone(name)
    assert (spec.input_size, spec.resize_size) == (input_size, resize_size)
    assert spec.mean == (0.498, 0.498, 0.498) and spec.std == (0.502, 0.502, 0.502)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_weights_are_real_imagenet_weights(name: str) -> None:
    """The unmodified backbone sees cats as ImageNet cat classes and dogs as dog classes."""
    spec = resolve_backbone(name)
    assert weights_available(spec)
    model = freeze(create_backbone(spec, num_classes=None, pretrained=True))
    imagenet_head = torch.nn.Linear(spec.feature_size, 1000)
    full = spec.load_weights(False)
    imagenet_head.load_state_dict({"weight": full["classifier.weight"], "bias": full["classifier.bias"]})
    transform = eval_transform(spec.preprocessing())
    hits = {}
    for kind, wanted in (("cats", CAT_CLASSES), ("dogs", DOG_CLASSES)):
        batch = torch.stack(
            [transform(Image.open(p).convert("RGB")) for p in photos("cats_dogs", "val", kind, count=8)]
        )
        with torch.inference_mode():
            top1 = imagenet_head(model(batch)).argmax(1).tolist()
        hits[kind] = sum(c in wanted for c in top1)
    # Random weights would land in these 5 (cat) or 118 (dog) of 1000 classes almost never.
    assert hits["cats"] >= 6 and hits["dogs"] >= 7, hits


def test_resnet18_weights_load_from_the_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = resolve_backbone("resnet18")
    assert not weights_available(spec)
    generated = spec.build().state_dict()
    generated = {
        k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v for k, v in generated.items()
    }
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(generated, cache / "resnet18-f37072fd.pth")
    assert weights_available(spec)

    model = create_backbone(spec, num_classes=None, pretrained=True)
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.weight"], generated["conv1.weight"])
    assert torch.equal(loaded["layer4.1.bn2.running_var"], generated["layer4.1.bn2.running_var"])
    assert "fc.weight" not in loaded  # the head is replaced by Identity for feature extraction


def test_resnet18_without_cached_weights_says_how_to_provide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="resnet18-f37072fd.pth"):
        create_backbone(resolve_backbone("resnet18"), num_classes=2, pretrained=True)


def test_mapping_by_position_checks_count_and_shapes() -> None:
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    mapped = map_state_dict_by_position({"x": torch.ones(2, 3), "y": torch.ones(2)}, target)
    assert list(mapped) == ["a.weight", "a.bias"]
    with pytest.raises(WeightsUnavailableError, match="shape"):
        map_state_dict_by_position({"x": torch.ones(3, 2), "y": torch.ones(2)}, target)
    with pytest.raises(WeightsUnavailableError, match="tensors"):
        map_state_dict_by_position({"x": torch.ones(2, 3)}, target)

"""The ONNX Runtime fast path agrees with a plain PyTorch forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import image_bytes
from vision_trainer.ml.backbones import create_backbone, freeze, list_backbones, resolve_backbone
from vision_trainer.ml.checkpoint import build_checkpoint
from vision_trainer.ml.data import eval_transform
from vision_trainer.ml.images import open_image
from vision_trainer.ml.predictor import Predictor
from vision_trainer.ml.runtime import OnnxExtractor, RuntimeOptions, build_extractor, resolve_runtime

pytest.importorskip("onnxruntime")


def test_auto_runtime_is_the_first_available_on_cpu_and_torch_on_cuda(monkeypatch) -> None:
    from vision_trainer.ml import runtime

    assert resolve_runtime("auto", "cpu") == "onnx"  # float32 ONNX Runtime, bf16 CPU or not
    assert resolve_runtime("auto", "cuda:0") == "torch"
    assert resolve_runtime("torch", "cpu") == "torch"
    assert resolve_runtime("onnx", "cpu") == "onnx"
    with monkeypatch.context() as patched:
        patched.setattr(runtime, "runtime_available", lambda kind: kind != "onnx")  # onnxruntime missing
        assert resolve_runtime("auto", "cpu") == "openvino"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)  # a CPU without bf16
    with pytest.raises(ValueError, match="AVX-512 BF16"):
        resolve_runtime("openvino-bf16", "cpu")


@pytest.mark.parametrize("kind", ["openvino", "openvino-bf16"])
def test_openvino_features_match_onnx_runtime(kind: str, tmp_path: Path) -> None:
    from vision_trainer.ml.runtime import OpenVinoExtractor, runtime_available

    if not runtime_available(kind):
        pytest.skip(f"{kind} cannot run here (openvino missing, or no bf16 on this CPU)")
    spec = resolve_backbone("efficientnet_lite0")
    backbone = freeze(create_backbone(spec, num_classes=None, pretrained=True))
    batch = torch.stack(
        [
            eval_transform(spec.preprocessing())(
                open_image(image_bytes((40 * i, 120, 200 - 40 * i), size=160, noise=40, seed=i))
            )
            for i in range(4)
        ]
    )
    options = RuntimeOptions("onnx", cache_dir=tmp_path)
    reference = build_extractor(backbone, name=spec.name, input_size=spec.input_size, options=options)(batch)
    other = build_extractor(
        backbone, name=spec.name, input_size=spec.input_size, options=RuntimeOptions(kind, cache_dir=tmp_path)
    )
    assert isinstance(other, OpenVinoExtractor) and len(list(tmp_path.glob("*.onnx"))) == 1  # the same file
    features = other(batch)
    cosine = torch.nn.functional.cosine_similarity(features, reference, dim=1)
    if kind == "openvino":
        assert torch.allclose(features, reference, rtol=1e-4, atol=1e-3)
    else:  # bfloat16 keeps 8 bits of mantissa: close in direction, not in the last digits
        assert cosine.min() > 0.98 and not torch.equal(features, reference)


@pytest.mark.parametrize("name", list_backbones())
def test_onnx_features_match_pytorch(name: str, tmp_path: Path) -> None:
    spec = resolve_backbone(name)
    torch.manual_seed(0)
    backbone = freeze(create_backbone(spec, num_classes=None, pretrained=False))
    onnx = build_extractor(
        backbone, name=spec.name, input_size=spec.input_size, options=RuntimeOptions("onnx", cache_dir=tmp_path)
    )
    assert isinstance(onnx, OnnxExtractor) and onnx.path.parent == tmp_path
    batch = torch.randn(3, 3, spec.input_size, spec.input_size)
    with torch.inference_mode():
        reference = backbone(batch)
    assert torch.allclose(onnx(batch), reference, rtol=1e-4, atol=1e-3)
    again = build_extractor(
        backbone, name=spec.name, input_size=spec.input_size, options=RuntimeOptions("onnx", cache_dir=tmp_path)
    )
    assert again is onnx and len(list(tmp_path.glob("*.onnx"))) == 1  # exported once, session shared


def test_onnx_predictor_gives_the_same_predictions_as_pytorch(tmp_path: Path) -> None:
    spec = resolve_backbone("efficientnet_lite0")
    model = freeze(create_backbone(spec, num_classes=3, pretrained=True))
    checkpoint = build_checkpoint(
        model_state_dict=model.state_dict(),
        class_names=["a", "b", "c"],
        backbone=spec.name,
        preprocessing=spec.preprocessing(),
        temperature=1.7,
    )
    images = [
        open_image(image_bytes(c, size=120, noise=30, seed=i))
        for i, c in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200), (120, 120, 120)])
    ]
    batch = torch.stack([eval_transform(spec.preprocessing())(image) for image in images])
    with torch.inference_mode():
        plain = torch.softmax(model(batch) / 1.7, dim=1)
    fast = Predictor.from_checkpoint(checkpoint, runtime=RuntimeOptions("onnx", cache_dir=tmp_path))
    probs = fast.probabilities(images)
    assert torch.allclose(probs, plain, atol=1e-4)
    assert probs.argmax(1).tolist() == plain.argmax(1).tolist()


def test_device_auto_picks_cuda_only_when_available(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert settings.resolved_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert settings.resolved_device() == "cuda:0"
    assert make_settings(tmp_path, device="cpu").resolved_device() == "cpu"
    with pytest.raises(ValueError):
        make_settings(tmp_path, device="tpu")


def test_torch_extractor_matches_plain_forward_on_cpu() -> None:
    from vision_trainer.ml.runtime import TorchExtractor

    spec = resolve_backbone("resnet18")
    backbone = freeze(create_backbone(spec, num_classes=None, pretrained=False))
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        reference = backbone(batch)
    assert torch.allclose(TorchExtractor(backbone, "cpu")(batch), reference, atol=1e-5)

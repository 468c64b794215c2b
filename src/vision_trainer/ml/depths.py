"""Features from several depths of a frozen backbone, in one forward pass.

A frozen backbone's last layer is tuned to ImageNet's classes; its earlier stages carry textures and
parts that transfer better to photos unlike ImageNet (satellite, scans, defects). ``StagePooling``
returns the backbone's pooled final features followed by the average-pooled outputs of the stages its
registry entry names (``BackboneSpec.feature_stages``), so one pass gives both; a head that wants only
the final features reads the first ``feature_size`` columns.

The layout of a feature vector, ``[final | stage 1 | stage 2 | ...]``, is what ``depth_layout`` says;
the feature cache keys name it, so a vector is reused only where the same stages were pooled.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .backbones import BackboneSpec
from .recipe import FeatureDepth

# The pooled stages' block gets this share of the final features' mean length: the final features stay
# the larger part, so a head that takes few steps leans on them as before (a 1-epoch head on 8 photos
# of two colours answered at chance with 1.0 and right with 0.7), while the stages still count
# (the probe of cached features, README Training: eurosat_rgb 0.945 at 0.7 and at 1.0, flowers5 0.729
# and 0.736).
STAGE_LENGTH = 0.7


@dataclass(frozen=True)
class DepthLayout:
    """Where each part of a feature vector is: the final features, then each pooled stage."""

    final: int
    stages: tuple[tuple[str, int], ...]

    @property
    def width(self) -> int:
        return self.final + sum(width for _, width in self.stages)

    def columns(self, depth: FeatureDepth) -> int:
        """How many leading columns a head of ``depth`` reads."""
        return self.final if depth == "final" else self.width

    def stages_for(self, depth: FeatureDepth) -> tuple[str, ...]:
        """The stages a head of ``depth`` reads after the final features."""
        return () if depth == "final" else tuple(name for name, _ in self.stages)

    def tag(self) -> str:
        """Names the layout in cache keys and file names (letters, digits, ``_``, ``.``, ``-`` only)."""
        return stages_tag(tuple(name for name, _ in self.stages))

    def scale(self, features: torch.Tensor, depth: FeatureDepth) -> torch.Tensor:
        """Per-column factors ``[columns]`` for features of the fit set: 1 for the final features, and
        one factor for the pooled stages together that gives them ``STAGE_LENGTH`` of the final
        features' mean length.

        Pooled early stages are small numbers next to the final features (their mean L2 norm is a
        fraction of it), so a head trained with one learning rate hardly uses them; z-scoring every
        column instead made the head worse on photos like ImageNet's (flowers5: 0.713 against 0.736
        with this, on the probe of cached features)."""
        columns = self.columns(depth)
        factors = torch.ones(columns, dtype=features.dtype, device=features.device)
        if columns > self.final and len(features):
            final = features[:, : self.final].norm(dim=1).mean()
            stages = features[:, self.final : columns].norm(dim=1).mean()
            factors[self.final :] = STAGE_LENGTH * final / stages.clamp(min=1e-12)
        return factors


def fold_scale(weight: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """A linear head's weight ``[C, F]`` trained on ``features * factors``, for raw features: the same logits."""
    return weight * factors.to(weight.device)[None, :]


def depth_layout(spec: BackboneSpec) -> DepthLayout:
    """The feature layout the backbone's extraction gives (its final features and its named stages)."""
    return DepthLayout(spec.feature_size, tuple((name, spec.stage_widths[name]) for name in spec.feature_stages))


class StagePooling(nn.Module):
    """A frozen backbone (its head ``nn.Identity``) that returns ``[final | pooled stages]`` features.

    Forward hooks on the named stages pool their outputs; they collect only during this module's own
    forward pass, per thread, so the backbone stays usable bare and from several threads at once.
    """

    def __init__(self, backbone: nn.Module, stages: Sequence[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.stage_names = tuple(stages)
        self._local = threading.local()
        for name in self.stage_names:
            backbone.get_submodule(name).register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        pooled = getattr(self._local, "pooled", None)
        if pooled is not None:
            pooled.append(output.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled: list[torch.Tensor] = []
        self._local.pooled = pooled
        try:
            final = self.backbone(x)
        finally:
            self._local.pooled = None
        return torch.cat([final.flatten(1), *pooled], dim=1)


_wrapped: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, ...], nn.Module]] = weakref.WeakKeyDictionary()
_wrapped_lock = threading.Lock()


def depth_extractor(spec: BackboneSpec, backbone: nn.Module, stages: tuple[str, ...] | None = None) -> nn.Module:
    """The module whose output is ``depth_layout(spec)``'s vector (or, with ``stages``, the final features
    and those stages): ``backbone`` itself when there are no stages, else one ``StagePooling`` per backbone
    object and stages (shared, so its exported runtime session and weight hash are made once).

    The hooks go on ``backbone``'s own stages and collect only inside ``StagePooling.forward``, so the
    backbone keeps working bare.
    """
    stages = spec.feature_stages if stages is None else stages
    if not stages:
        return backbone
    with _wrapped_lock:
        wrappers = _wrapped.setdefault(backbone, {})
        if stages not in wrappers:
            wrappers[stages] = StagePooling(backbone, stages).eval()
        return wrappers[stages]


def stages_tag(stages: tuple[str, ...]) -> str:
    """``final`` or ``final_blocks.3_blocks.4``: names which stages are pooled in, in keys and file names."""
    return "_".join(("final", *stages))


def extractor_name(spec: BackboneSpec, module: nn.Module) -> str:
    """The name a feature module's exported runtime file goes by (training and serving share it)."""
    stages = getattr(module, "stage_names", ())
    return spec.name if not stages else f"{spec.name}-{stages_tag(stages)}"

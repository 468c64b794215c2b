"""``backbone=auto``: compare backbones by k-fold accuracy on the training photos' cached features.

Only training photos are looked at (never the test split), on their plain view, with the same
out-of-fold heads that give ``metrics.cv_accuracy``. The best wins; a backbone within ``tie`` of the
best that computed its features faster wins the tie.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .backbones import BackboneSpec, pretrained_backbone
from .crossval import cross_validate
from .data import LabelledImage
from .recipe import Recipe

TIE = 0.005

# (spec, its frozen pretrained backbone, photos) -> plain-view (features, labels), through the feature cache
Extract = Callable[[BackboneSpec, nn.Module, Sequence[LabelledImage]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Candidate:
    backbone: str
    cv_accuracy: float
    cv_std: float
    seconds: float

    def row(self) -> dict[str, object]:
        return {
            "backbone": self.backbone,
            "cv_accuracy": round(self.cv_accuracy, 4),
            "cv_std": round(self.cv_std, 4),
            "seconds": round(self.seconds, 2),
        }


def select_backbone(
    specs: Sequence[BackboneSpec],
    train: Sequence[LabelledImage],
    num_classes: int,
    extract: Extract,
    recipe: Recipe,
) -> tuple[BackboneSpec, list[Candidate], str]:
    """Pick the backbone whose features classify the training photos best out of fold.

    Args:
        specs: The candidates, cheapest first.
        train: The training photos (never the test split).
        extract: ``extract(spec, backbone, items) -> (features, labels)`` of the plain view, cached.
        recipe: How the out-of-fold heads train.

    Returns:
        The chosen spec, every candidate's figures, and a sentence saying why.
    """
    candidates = []
    for spec in specs:
        started = time.monotonic()
        backbone = pretrained_backbone(spec)
        x, y = extract(spec, backbone, train)
        cv = cross_validate(x, y, train, recipe, views=1, num_classes=num_classes)
        accuracy, std = (cv.mean, cv.std) if cv is not None else (0.0, 0.0)
        candidates.append(Candidate(spec.name, accuracy, std, time.monotonic() - started))
    best = max(c.cv_accuracy for c in candidates)
    close = [c for c in candidates if c.cv_accuracy >= best - TIE]
    chosen = min(close, key=lambda c: c.seconds)
    table = ", ".join(f"{c.backbone} {c.cv_accuracy:.4f}" for c in candidates)
    why = f"Backbone auto: {chosen.backbone}, the best cross-validated accuracy on the training photos ({table})" + (
        f"; within {TIE:.1%} of the best, the fastest wins" if len(close) > 1 else ""
    )
    return next(s for s in specs if s.name == chosen.backbone), candidates, why

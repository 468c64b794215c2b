"""A trained model in memory with its preprocessing: batched top-k prediction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from .backbones import BackboneSpec, create_backbone, freeze, resolve_backbone
from .data import Normalizer, plain_view
from .errors import CheckpointError
from .runtime import FeatureExtractor, RuntimeOptions, build_extractor


class Predictor:
    """Frozen feature extractor + linear head + temperature + preprocessing, ready to answer requests.

    Safe to call from several threads at once (inference only, no shared mutable state).
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        head: nn.Module,
        *,
        class_names: Sequence[str],
        preprocessing: Mapping[str, Any],
        temperature: float = 1.0,
    ) -> None:
        self.extractor = extractor
        self.head = freeze(head).cpu()
        self.class_names = list(class_names)
        self.transform = plain_view(preprocessing)
        self.normalize = Normalizer(preprocessing)
        self.resize_size = int(preprocessing["resize_size"])
        self.temperature = float(temperature)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], *, runtime: RuntimeOptions = RuntimeOptions()) -> Predictor:
        """Rebuild the model described by a checkpoint dict (see ``checkpoint.load_checkpoint``).

        Raises:
            CheckpointError: the state dict does not fit the named backbone.
        """
        spec = resolve_backbone(checkpoint.get("backbone") or "resnet18")
        class_names = checkpoint["class_names"]
        model = create_backbone(spec, num_classes=len(class_names), pretrained=False)
        try:
            model.load_state_dict(checkpoint["model_state_dict"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"weights do not fit backbone {spec.name!r}: {exc}") from None
        head = getattr(model, spec.head_attr)
        setattr(model, spec.head_attr, nn.Identity())
        return cls._assemble(freeze(model), head, checkpoint, spec, runtime)

    @classmethod
    def from_head(
        cls, head_checkpoint: Mapping[str, Any], backbone: nn.Module, *, runtime: RuntimeOptions = RuntimeOptions()
    ) -> Predictor:
        """A stored head on the shared frozen ``backbone`` (see ``backbones.pretrained_backbone``), so
        serving many models keeps one copy of the backbone in memory.

        Raises:
            CheckpointError: the head does not fit the backbone.
        """
        spec = resolve_backbone(head_checkpoint["backbone"])
        class_names = head_checkpoint["class_names"]
        head = nn.Linear(spec.feature_size, len(class_names))
        prefix = f"{spec.head_attr}."
        try:
            head.load_state_dict({k.removeprefix(prefix): v for k, v in head_checkpoint["head_state_dict"].items()})
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"head does not fit backbone {spec.name!r}: {exc}") from None
        return cls._assemble(backbone, head, head_checkpoint, spec, runtime)

    @classmethod
    def _assemble(
        cls,
        backbone: nn.Module,
        head: nn.Module,
        checkpoint: Mapping[str, Any],
        spec: BackboneSpec,
        runtime: RuntimeOptions,
    ) -> Predictor:
        extractor = build_extractor(backbone, name=spec.name, input_size=spec.input_size, options=runtime)
        return cls(
            extractor,
            head,
            class_names=checkpoint["class_names"],
            preprocessing=checkpoint.get("preprocessing") or spec.preprocessing(),
            temperature=checkpoint.get("temperature") or 1.0,
        )

    def probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Class probabilities ``[len(images), classes]`` (temperature-scaled softmax).

        At most the extractor's ``batch_size`` images go through the backbone at once (training passes
        at most as many views), so a large batch request does not grow the runtime's working memory
        beyond what training uses.
        """
        logits = []
        size = self.extractor.batch_size
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            batch = self.normalize(torch.stack([self.transform(image) for image in chunk]))
            with torch.inference_mode():
                logits.append(self.head(self.extractor(batch).cpu().float()) / self.temperature)
        return torch.softmax(torch.cat(logits), dim=1)

    def predict(self, images: Sequence[Image.Image], *, top_k: int) -> list[list[tuple[str, float]]]:
        """The ``top_k`` most likely ``(label, probability)`` pairs per image, best first."""
        probs = self.probabilities(images)
        k = max(1, min(top_k, len(self.class_names)))
        values, indices = probs.topk(k, dim=1)
        return [
            [(self.class_names[i], float(v)) for v, i in zip(row_v.tolist(), row_i.tolist())]
            for row_v, row_i in zip(values, indices)
        ]

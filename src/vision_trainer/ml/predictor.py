"""A trained model in memory with its preprocessing: batched top-k prediction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .backbones import BackboneSpec, create_backbone, freeze, resolve_backbone
from .cam import (
    MapForward,
    build_map_forward,
    class_activation_maps,
    feature_map_layer,
    grad_cams,
    pools_map,
)
from .classifier import classifier_parts, feature_module, feature_stages, head_layer
from .data import Normalizer, plain_view
from .depths import depth_extractor, extractor_name
from .errors import CheckpointError
from .extraction import trunk_name
from .novelty import Novelty
from .runtime import FeatureExtractor, RuntimeOptions, build_extractor
from .tuning import FULL_CUT, TunedHead, activation_shape, load_top, shared_trunk, stored_cut


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
        spec, features, head = classifier_parts(checkpoint)
        return cls._assemble(features, head, checkpoint, spec, runtime)

    @classmethod
    def from_head(
        cls, head_checkpoint: Mapping[str, Any], backbone: nn.Module, *, runtime: RuntimeOptions = RuntimeOptions()
    ) -> Predictor:
        """A stored head on the shared frozen ``backbone`` (see ``backbones.pretrained_backbone``), so
        serving many models keeps one copy of the backbone in memory. The features come from the same
        module training extracted them with (``depths.depth_extractor``); a head of the final features
        reads their first columns.

        Raises:
            CheckpointError: the head does not fit the backbone.
        """
        spec = resolve_backbone(head_checkpoint["backbone"])
        head = head_layer(spec, head_checkpoint["head_state_dict"], len(head_checkpoint["class_names"]))
        stages = feature_stages(head_checkpoint, spec, head)
        if head_checkpoint.get("tuned_state_dict"):
            return cls._tuned(head_checkpoint, spec, backbone, head, stages, runtime)
        # The shared backbone's wrapper for these stages (the registry's own when the head reads none, so
        # heads of the final features read the first columns of what training extracted).
        features = depth_extractor(spec, backbone, stages or None)
        return cls._assemble(features, head, head_checkpoint, spec, runtime)

    @classmethod
    def _tuned(
        cls,
        checkpoint: Mapping[str, Any],
        spec: BackboneSpec,
        backbone: nn.Module,
        head: nn.Linear,
        stages: tuple[str, ...],
        runtime: RuntimeOptions,
    ) -> Predictor:
        """A tuned model: the shared trunk up to its cut, then its own top and head (``ml.tuning``). Its
        heatmaps come from the whole network with the tuned layers in place.

        Raises:
            CheckpointError: the cut point or the tuned tensors do not fit the backbone.
        """
        tuned = checkpoint["tuned_state_dict"]
        if checkpoint.get("tune_cut") == FULL_CUT:
            return cls._fine_tuned(checkpoint, spec, backbone, head, runtime)
        try:
            cut = stored_cut(spec, checkpoint.get("tune_cut"))
            trunk = shared_trunk(backbone, cut, stages)
            top = load_top(backbone, cut, activation_shape(trunk, spec.input_size), tuned)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"the tuned layers do not fit backbone {spec.name!r}: {exc}") from None
        whole = create_backbone(spec, num_classes=None, pretrained=False)
        whole.load_state_dict({**backbone.state_dict(), **tuned})
        predictor = cls._assemble(
            trunk, TunedHead(top, head), checkpoint, spec, runtime, name=trunk_name(spec, cut.name, stages)
        )
        predictor.module, predictor.linear = feature_module(spec, freeze(whole), stages), head
        return predictor

    @classmethod
    def _fine_tuned(
        cls,
        checkpoint: Mapping[str, Any],
        spec: BackboneSpec,
        backbone: nn.Module,
        head: nn.Linear,
        runtime: RuntimeOptions,
    ) -> Predictor:
        """A model fine-tuned end to end: a backbone of its own (nothing to share), served as a full
        checkpoint's is.

        Raises:
            CheckpointError: the tuned tensors do not fit the backbone.
        """
        whole = create_backbone(spec, num_classes=None, pretrained=False)
        try:
            whole.load_state_dict({**backbone.state_dict(), **checkpoint["tuned_state_dict"]})
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"the fine-tuned layers do not fit backbone {spec.name!r}: {exc}") from None
        return cls._assemble(feature_module(spec, freeze(whole), ()), head, checkpoint, spec, runtime)

    @classmethod
    def _assemble(
        cls,
        backbone: nn.Module,
        head: nn.Module,
        checkpoint: Mapping[str, Any],
        spec: BackboneSpec,
        runtime: RuntimeOptions,
        name: str | None = None,
    ) -> Predictor:
        extractor = build_extractor(
            backbone, name=name or extractor_name(spec, backbone), input_size=spec.input_size, options=runtime
        )
        predictor = cls(
            extractor,
            head,
            class_names=checkpoint["class_names"],
            preprocessing=checkpoint.get("preprocessing") or spec.preprocessing(),
            temperature=checkpoint.get("temperature") or 1.0,
        )
        predictor.module, predictor.spec, predictor.runtime = backbone, spec, runtime  # for heatmaps (explain)
        predictor.linear = head
        return predictor

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

    # --- trust: the features behind a prediction (novelty) and where the model looked (ml.cam) ----------
    # Set by ``_assemble``: the backbone's torch module (the extractor may be an ONNX session), its spec and
    # the runtime, so that heatmaps come from the same network. ``None`` for a predictor built by hand.
    module: nn.Module | None = None
    linear: nn.Module | None = None  # the linear head on ``module``'s features (a tuned model's after its top)
    spec: BackboneSpec | None = None
    runtime: RuntimeOptions = RuntimeOptions()
    _maps: MapForward | None = None
    # Set by whoever loads the model: its training photos' reference, or why it has none.
    novelty: Novelty | None = None
    novelty_note: str | None = None

    def features_and_probabilities(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """What ``self.extractor`` gives for each image (``[N, F]``, the features novelty is measured on) and
        the class probabilities ``[N, C]``, in batches of the extractor's size."""
        features, logits = [], []
        size = self.extractor.batch_size
        for start in range(0, len(images), size):
            batch = self.normalize(torch.stack([self.transform(image) for image in images[start : start + size]]))
            with torch.inference_mode():
                x = self.extractor(batch).cpu().float()
                if isinstance(self.head, TunedHead):  # what its head reads: the tuned top's output
                    x = self.head.embed(x)
                    logits.append(self.head.linear(x) / self.temperature)
                else:
                    logits.append(self.head(x) / self.temperature)
                features.append(x)
        return torch.cat(features), torch.softmax(torch.cat(logits), dim=1)

    def explain(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Features, probabilities and, for each image's most likely class, its class activation map
        ``[N, h, w]`` (values 0-1) on the backbone's last feature map, from one forward pass per batch.

        Exact CAM for a linear head whose first inputs are the pooled map (the final features, alone or
        followed by pooled earlier stages); Grad-CAM through the torch module otherwise.

        Raises:
            ValueError: the predictor has no backbone module to explain (built by hand).
        """
        if self.module is None or self.spec is None:
            raise ValueError("this predictor has no backbone module to explain")
        maps_forward = self._map_forward()
        linear = self.linear if self.linear is not None else self.head
        features, probabilities, maps = [], [], []
        size = self.extractor.batch_size
        for start in range(0, len(images), size):
            batch = self.normalize(torch.stack([self.transform(image) for image in images[start : start + size]]))
            x, fmap = maps_forward(batch)
            with torch.inference_mode():
                p = torch.softmax(linear(x.float()) / self.temperature, dim=1)
            classes = p.argmax(dim=1).tolist()
            weight = getattr(linear, "weight", None)
            if isinstance(linear, nn.Linear) and weight is not None and pools_map(x, fmap):
                maps.append(class_activation_maps(fmap, weight.detach()[:, : fmap.shape[1]], classes))
            else:
                layer = feature_map_layer(self.module, self.spec.input_size)
                maps.append(grad_cams(self.module, layer, linear, batch, classes))
            features.append(x.float())
            probabilities.append(p)
        return torch.cat(features), torch.cat(probabilities), np.concatenate(maps)

    def _map_forward(self) -> MapForward:
        if self._maps is None:
            if self.module is None or self.spec is None:
                raise ValueError("this predictor has no backbone module to explain")
            self._maps = build_map_forward(
                self.module, name=self.spec.name, input_size=self.spec.input_size, options=self.runtime
            )
        return self._maps

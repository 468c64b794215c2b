"""Features of a job's photos through the frozen backbone and the feature cache.

The backbone is frozen, so its features are computed once per image and view (and, with a cache,
taken from there when an earlier job computed them); the names here say which weights and runtime
gave them, so a cached vector is only reused for the same pixels through the same network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .backbones import BackboneSpec
from .data import LabelledImage, Normalizer, augment_view, plain_view
from .depths import DepthLayout, depth_extractor, depth_layout, extractor_name, stages_tag
from .features import CachedExtraction, FeatureCache, ViewSet
from .hooks import TrainingHooks
from .recipe import Compute, Recipe
from .runtime import FeatureExtractor, RuntimeOptions, build_extractor, frozen_module_hash

Features = tuple[torch.Tensor, torch.Tensor]


def backbone_fingerprint(spec: BackboneSpec, backbone: nn.Module) -> str:
    """Names a backbone's weights: its name and a hash of its tensors (computed once per module)."""
    return f"{spec.name}-{frozen_module_hash(backbone)[:16]}"


def features_fingerprint(weights: str, runtime: RuntimeOptions, layout: DepthLayout | None = None) -> str:
    """Names the features a backbone gives: its weights, which depths are pooled into them (``ml.depths``)
    and where it runs (ONNX Runtime, PyTorch on the CPU or on CUDA give features that differ in the last
    digits)."""
    depths = "" if layout is None or not layout.stages else f"-{layout.tag()}"
    return f"{weights}{depths}-{runtime.kind}-{runtime.device.split(':')[0]}"


def cached_extraction(
    spec: BackboneSpec,
    backbone: nn.Module,
    fingerprint: str,
    compute: Compute,
    hooks: TrainingHooks,
    cache: FeatureCache | None,
    *,
    module: nn.Module | None = None,
    name: str | None = None,
    dtype: str = "float32",
) -> CachedExtraction:
    """An extraction that takes what ``cache`` holds and builds the runtime's extractor only when some
    feature is missing: of ``depth_extractor(spec, backbone)``, or of ``module`` (exported as ``name``)."""
    extractor: list[FeatureExtractor] = []

    def build() -> FeatureExtractor:
        if not extractor:
            features = module if module is not None else depth_extractor(spec, backbone)
            extractor.append(
                build_extractor(
                    features,
                    name=name or extractor_name(spec, features),
                    input_size=spec.input_size,
                    options=compute.runtime,
                )
            )
        return extractor[0]

    return CachedExtraction(
        cache=cache,
        fingerprint=fingerprint,
        extractor=build,
        draft_size=spec.resize_size,
        normalize=Normalizer(spec.preprocessing()),
        device=compute.runtime.device,
        batch_size=compute.extract_batch_size or compute.runtime.batch_size,
        num_workers=compute.num_workers,
        should_stop=hooks.should_stop,
        dtype=dtype,
    )


def trunk_name(spec: BackboneSpec, cut: str, stages: tuple[str, ...]) -> str:
    """The name of a trunk's exported runtime file and of its activations in the cache."""
    return f"{spec.name}-trunk.{cut}-{stages_tag(stages)}"


def cached_trunk_extraction(
    spec: BackboneSpec,
    trunk: nn.Module,
    weights: str,
    cut: str,
    compute: Compute,
    hooks: TrainingHooks,
    cache: FeatureCache | None,
) -> CachedExtraction:
    """Activations of ``trunk`` (``ml.tuning.Trunk``: the frozen backbone up to ``cut``) through the one
    feature cache, as float16, keyed by the backbone's weights, the cut and the pooled stages."""
    stages = tuple(getattr(trunk, "stage_names", ()))
    tag = f"cut.{cut}-{stages_tag(stages)}"
    fingerprint = f"{weights}-{tag}-{compute.runtime.kind}-{compute.runtime.device.split(':')[0]}"
    return cached_extraction(
        spec,
        trunk,
        fingerprint,
        compute,
        hooks,
        cache,
        module=trunk,
        name=trunk_name(spec, cut, stages),
        dtype="float16",
    )


def _count_progress(extraction: CachedExtraction, total: int, hooks: TrainingHooks) -> None:
    """Progress counts the views that go through the backbone (cached ones cost nothing)."""
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        hooks.progress("extracting", done, total, None)

    extraction.on_batch = on_batch


def plain_features(
    spec: BackboneSpec,
    backbone: nn.Module,
    items: Sequence[LabelledImage],
    recipe: Recipe,
    compute: Compute,
    hooks: TrainingHooks = TrainingHooks(),
    cache: FeatureCache | None = None,
) -> Features:
    """Plain-view (resize + centre crop) features of ``items`` through the cache: ``([N, F], [N] labels)``,
    in ``depth_layout(spec)`` (the final features first, then the pooled stages)."""
    fingerprint = features_fingerprint(backbone_fingerprint(spec, backbone), compute.runtime, depth_layout(spec))
    extraction = cached_extraction(spec, backbone, fingerprint, compute, hooks, cache)
    prep = spec.preprocessing()
    views = ViewSet(plain_view(prep), augment_view(prep), 0, recipe.seed)
    _count_progress(extraction, extraction.missing(items, views), hooks)
    try:
        return extraction.features(items, views)
    finally:
        extraction.flush()


def split_features(
    extraction: CachedExtraction,
    spec: BackboneSpec,
    item_sets: Sequence[Sequence[LabelledImage]],
    recipe: Recipe,
    hooks: TrainingHooks,
) -> tuple[Features, Features, Features]:
    """Features of the fit set (plain + ``recipe.augment_views`` augmented views), then the validation
    and test sets (plain view only)."""
    fit_items, val_items, test_items = item_sets
    prep = spec.preprocessing()
    fit_views = ViewSet(plain_view(prep), augment_view(prep), recipe.augment_views, recipe.seed)
    plain = ViewSet(plain_view(prep), augment_view(prep), 0, recipe.seed)
    total = extraction.missing(fit_items, fit_views) + extraction.missing([*val_items, *test_items], plain)
    _count_progress(extraction, total, hooks)
    return (
        extraction.features(fit_items, fit_views),
        extraction.features(val_items, plain),
        extraction.features(test_items, plain),
    )

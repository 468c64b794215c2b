"""Transfer learning on a frozen backbone: features once per photo and view, then a new linear head.

The steps live in their own modules (``extraction``: features through the cache; ``fit``: the head's
epochs; ``evaluation``: the report); this one runs them in order for a job and for ``backbone=auto``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .backbones import BackboneSpec, create_backbone, freeze, pretrained_backbone
from .crossval import cross_validate
from .data import LabelledImage, Split, validation_fold
from .depths import depth_layout, fold_scale
from .errors import InvalidDatasetError
from .evaluation import evaluate, report_uncertainty
from .extraction import (
    Features,
    backbone_fingerprint,
    cached_extraction,
    features_fingerprint,
    plain_features,
    split_features,
)
from .features import CachedExtraction, FeatureCache
from .fit import accuracy, class_weights, fit_head, logits_of, single_threaded
from .full import train_full
from .hooks import TrainingHooks
from .metrics import fit_temperature
from .recipe import Compute, Recipe
from .selection import select_backbone
from .tuned import Tuned, auto_keeps_head, train_top
from .tuning import FULL_CUT

__all__ = [
    "Compute",
    "Features",
    "Recipe",
    "TrainResult",
    "TrainingHooks",
    "accuracy",
    "auto_backbone",
    "backbone_fingerprint",
    "class_weights",
    "evaluate",
    "features_fingerprint",
    "fit_head",
    "logits_of",
    "plain_features",
    "single_threaded",
    "train_classifier",
]


@dataclass
class TrainResult:
    """A trained head and what we know about it.

    ``head_state`` is the new layer under the model's own key names (``fc.weight``, ``fc.bias`` for
    resnet18), on the CPU; the frozen backbone it sits on is ``backbone_fingerprint``'s weights.
    """

    head_state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    temperature: float = 1.0
    backbone_fingerprint: str = ""
    validation_items: list[LabelledImage] = field(default_factory=list)
    fit_items: list[LabelledImage] = field(default_factory=list)
    feature_stages: list[str] = field(default_factory=list)  # pooled stages the head reads after the final features
    tuned_state: dict[str, torch.Tensor] | None = None  # a tuned top's layers under the backbone's keys
    tune_cut: str | None = None
    # a tuned model's features (what its head reads) of the training and test photos, for novelty
    novelty_features: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def train_classifier(
    spec: BackboneSpec,
    split: Split,
    class_names: Sequence[str],
    recipe: Recipe,
    compute: Compute = Compute(),
    hooks: TrainingHooks = TrainingHooks(),
    cache: FeatureCache | None = None,
) -> TrainResult:
    """Transfer learning: frozen pretrained backbone, new ``nn.Linear`` head, only the head trained.

    The backbone is frozen, so its features are computed once per image and view (and, with a
    ``cache``, taken from there when an earlier job computed them); the head then trains on them for
    ``recipe.epochs`` epochs; every epoch ends with a test-set evaluation and a log line
    ``Epoch i/N Loss: … Train Acc: … Test Acc: …``.

    Raises:
        InvalidDatasetError: the train or test set is empty.
        WeightsUnavailableError: pretrained weights were asked for and cannot be had.
        TrainingCancelled: ``hooks.should_stop()`` turned True.
    """
    if not split.train or not split.test:
        raise InvalidDatasetError("both the train and the test split need at least one image")
    torch.manual_seed(recipe.seed)
    hooks.progress("preparing", 0, 0, None)
    if compute.pretrained:
        backbone = pretrained_backbone(spec, allow_download=compute.allow_download)
    else:
        backbone = freeze(create_backbone(spec, num_classes=None, pretrained=False))
    weights = backbone_fingerprint(spec, backbone)
    fingerprint = features_fingerprint(weights, compute.runtime, depth_layout(spec))
    # A validation fold is only carved out to stop early; the temperature comes from out-of-fold heads.
    parts = (
        validation_fold(split.train, fraction=recipe.validation_fraction, seed=recipe.seed)
        if recipe.early_stopping
        else Split(train=list(split.train), test=[])
    )
    if recipe.tune == "top":
        return _tuned_result(
            train_top(spec, backbone, weights, split, class_names, recipe, compute, hooks, cache), None
        )
    if recipe.tune == "full":
        return _tuned_result(train_full(spec, backbone, weights, split, class_names, recipe, compute, hooks), None)
    extraction = cached_extraction(spec, backbone, fingerprint, compute, hooks, cache)
    try:
        result = _train_head(extraction, spec, weights, split, parts, class_names, recipe, hooks)
    finally:
        extraction.flush()
    if recipe.tune == "head" or not spec.cut_points:
        return result
    kept = auto_keeps_head(result.metrics, split.train, recipe)
    if kept is not None:
        message = kept.pop("message")
        hooks.log(f"Tune auto: keeping the head; {message}")
        result.metrics["tuning"] = {"tune": "auto", "kept": "head", **kept}
        return result
    tuned = train_top(spec, backbone, weights, split, class_names, recipe, compute, hooks, cache)
    return _tuned_result(tuned, result)


def _tuned_result(tuned: Tuned, head_result: TrainResult | None) -> TrainResult:
    """The tuned model as a ``TrainResult``, or ``head_result`` with the tuning's figures when the head won."""
    asked = "auto" if head_result is not None else "full" if tuned.summary["cut"] == FULL_CUT else "top"
    summary = {"tune": asked, "kept": tuned.kept, **tuned.summary}
    if tuned.kept == "head":
        if head_result is None:  # tune=top or full on a split too small for a validation fold
            raise InvalidDatasetError(f"cannot tune with tune={asked}: {summary.get('why')}")
        head_result.metrics["tuning"] = summary
        return head_result
    assert tuned.metrics is not None and tuned.head_state is not None and tuned.parts is not None
    tuned.metrics["tuning"] = summary
    if head_result is not None:  # the head's extraction went through the backbone too
        tuned.metrics["images_through_backbone"] += head_result.metrics["images_through_backbone"]
    return TrainResult(
        head_state=tuned.head_state,
        history=tuned.history or [],
        metrics=tuned.metrics,
        temperature=tuned.temperature,
        backbone_fingerprint=tuned.backbone_fingerprint,
        validation_items=list(tuned.parts.test),
        fit_items=list(tuned.parts.train),
        feature_stages=list(tuned.feature_stages),
        tuned_state=tuned.tuned_state,
        tune_cut=str(summary["cut"]),
        novelty_features=tuned.novelty_features,
    )


def _train_head(
    extraction: CachedExtraction,
    spec: BackboneSpec,
    weights: str,
    split: Split,
    parts: Split,
    class_names: Sequence[str],
    recipe: Recipe,
    hooks: TrainingHooks,
) -> TrainResult:
    """Features of every split (through ``extraction``), then the head, its cross-validation and metrics."""
    (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = split_features(
        extraction, spec, [parts.train, parts.test, split.test], recipe, hooks
    )
    hooks.log(f"Features: {extraction.computed} computed, {extraction.reused} reused")
    layout = depth_layout(spec)
    columns = layout.columns(recipe.depth)
    factors = layout.scale(x_fit, recipe.depth)
    x_fit, x_val, x_test = (_columns(x, columns) * factors for x in (x_fit, x_val, x_test))

    torch.manual_seed(recipe.seed)
    head = nn.Linear(columns, len(class_names)).to(x_fit.device)
    weights_per_class = class_weights(y_fit, len(class_names)) if recipe.class_weighting == "balanced" else None
    watch = (x_val, y_val) if recipe.early_stopping and len(y_val) else None

    with single_threaded(x_fit.device.type == "cpu"):
        history, best_epoch = fit_head(
            head, (x_fit, y_fit), (x_test, y_test), recipe, hooks, validation=watch, class_weights=weights_per_class
        )
        hooks.progress("evaluating", 0, len(split.test), recipe.epochs)
        cv = cross_validate(
            x_fit,
            y_fit,
            parts.train,
            recipe.with_values(epochs=best_epoch or recipe.epochs),
            views=1 + recipe.augment_views,
            num_classes=len(class_names),
            class_weights=weights_per_class,
        )
    temperature = (
        fit_temperature(cv.logits, cv.labels) if cv else fit_temperature(logits_of(head, x_val), y_val.cpu().tolist())
    )
    metrics = evaluate(logits_of(head, x_test), y_test.cpu().tolist(), split.test, class_names, temperature)
    metrics.update(
        train_count=len(parts.train),
        validation_count=len(parts.test),
        images_through_backbone=extraction.computed,
        features_extracted=extraction.computed,
        features_reused=extraction.reused,
        best_epoch=best_epoch,
        cv_accuracy=cv.summary() if cv else None,
        calibration={**metrics["calibration"], "fitted_on": "out_of_fold" if cv else "validation_fold"},
    )
    report_uncertainty(metrics, hooks)
    metrics["feature_depth"] = {"depth": recipe.depth, "columns": columns, "layout": layout.tag()}
    with torch.no_grad():  # the head reads raw features from here on: the scale goes into its weights
        head.weight.copy_(fold_scale(head.weight, factors))
    return TrainResult(
        head_state={
            f"{spec.head_attr}.{key}": value.detach().cpu().clone() for key, value in head.state_dict().items()
        },
        feature_stages=list(layout.stages_for(recipe.depth)),
        history=history,
        metrics=metrics,
        temperature=temperature,
        backbone_fingerprint=weights,
        validation_items=list(parts.test),
        fit_items=list(parts.train),
    )


def _columns(x: torch.Tensor, columns: int) -> torch.Tensor:
    """The first ``columns`` of every feature row (an empty set of features has none at all)."""
    return x[:, :columns] if len(x) else x.new_zeros((0, columns))


def auto_backbone(
    specs: Sequence[BackboneSpec],
    split: Split,
    class_names: Sequence[str],
    recipe: Recipe,
    compute: Compute = Compute(),
    hooks: TrainingHooks = TrainingHooks(),
    cache: FeatureCache | None = None,
) -> tuple[BackboneSpec, list[dict[str, object]], str]:
    """``backbone=auto``: the candidate whose plain-view features of the training photos (never the test
    split) classify them best out of fold; their features land in the cache, so training on the chosen
    one computes only its augmented views.

    Returns:
        The chosen backbone, ``[{backbone, cv_accuracy, cv_std, seconds}]`` and the reason, for the log.
    """

    def extract(spec: BackboneSpec, backbone: nn.Module, items: Sequence[LabelledImage]) -> Features:
        x, y = plain_features(spec, backbone, items, recipe, compute, hooks, cache)
        layout = depth_layout(spec)  # the columns and scale the head would train on
        x = _columns(x, layout.columns(recipe.depth))
        return x * layout.scale(x, recipe.depth), y

    chosen, candidates, why = select_backbone(specs, split.train, len(class_names), extract, recipe)
    return chosen, [c.row() for c in candidates], why

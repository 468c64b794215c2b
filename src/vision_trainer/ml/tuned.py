"""Training with the top of the backbone tuned (``tune=top``, and ``tune=auto`` when the head leaves room).

The trunk's activations come through the feature cache (float16, keyed by the cut point), so a retrain
computes only new photos'. A validation fold of the training photos (never the test split) judges the
tuned top against a head trained on the same photos, gives the tuned model its temperature (photos the
tuned layers did not train on) and, for ``auto``, decides which is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .backbones import BackboneSpec
from .data import LabelledImage, Split, validation_fold
from .depths import depth_layout, fold_scale
from .evaluation import evaluate, report_uncertainty
from .extraction import cached_trunk_extraction, split_features
from .features import FeatureCache
from .fit import class_weights, fit_head, single_threaded
from .hooks import TrainingHooks
from .metrics import fit_temperature
from .recipe import Compute, Recipe
from .tuning import (
    TopRecipe,
    activation_shape,
    build_top,
    cut_point,
    fit_top,
    scaled_logits,
    shared_trunk,
    top_outputs,
)

# ``auto`` keeps the head without tuning when the head's out-of-fold error on the training photos is under
# this share: what tuning can gain is bounded by that error, and below it the gain is within the noise of
# a validation fold, while tuning would cost a pass through the trunk and the tuned epochs.
AUTO_HEAD_ENOUGH = 0.97
# ``auto`` keeps the head when the validation fold would hold fewer photos than this: with fewer, one photo
# moves the fold's accuracy by more than three points, more than tuning typically gains, so the comparison
# of head and top would be a coin toss that costs a pass through the trunk.
AUTO_MIN_VALIDATION = 30


@dataclass
class Tuned:
    """A tuned model, or the figures of a tuning that lost to the head (``kept == "head"``)."""

    kept: str  # "top" or "head"
    summary: dict[str, Any]
    head_state: dict[str, torch.Tensor] | None = None
    tuned_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] | None = None
    metrics: dict[str, Any] | None = None
    temperature: float = 1.0
    parts: Split | None = None
    backbone_fingerprint: str = ""
    feature_stages: tuple[str, ...] = ()
    novelty_features: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def auto_keeps_head(metrics: dict[str, Any], train: Sequence[LabelledImage], recipe: Recipe) -> dict[str, Any] | None:
    """Why ``tune=auto`` keeps the head without tuning (``why`` and its figures, with a ``message`` for the
    log), or None when tuning the top may pay: see ``AUTO_MIN_VALIDATION`` and ``AUTO_HEAD_ENOUGH``."""
    fold = len(validation_fold(train, fraction=recipe.validation_fraction, seed=recipe.seed).test)
    if fold < AUTO_MIN_VALIDATION:
        return {
            "why": "validation_fold_too_small",
            "validation_count": fold,
            "message": f"its validation fold would hold {fold} training photos, too few to tell head and top "
            f"apart ({AUTO_MIN_VALIDATION} or more)",
        }
    mean = (metrics.get("cv_accuracy") or {}).get("mean")
    if mean is not None and mean >= AUTO_HEAD_ENOUGH:
        return {
            "why": "head_enough",
            "cv_accuracy": float(mean),
            "message": f"its out-of-fold accuracy {float(mean):.4f} on the training photos leaves too little "
            f"for tuning the top ({AUTO_HEAD_ENOUGH} or more)",
        }
    return None


def train_top(
    spec: BackboneSpec,
    backbone: nn.Module,
    weights: str,
    split: Split,
    class_names: Sequence[str],
    recipe: Recipe,
    compute: Compute,
    hooks: TrainingHooks,
    cache: FeatureCache | None,
) -> Tuned:
    """Tune the layers above ``recipe.cut`` (the backbone's first cut point by default) with a new head.

    Raises:
        ValueError: the backbone has no such cut point.
        TrainingCancelled: ``hooks.should_stop()`` turned True.
    """
    cut = cut_point(spec, recipe.cut)
    layout = depth_layout(spec)
    stages = layout.stages_for(recipe.depth)
    trunk = shared_trunk(backbone, cut, stages)
    shape = activation_shape(trunk, spec.input_size)
    parts = validation_fold(split.train, fraction=recipe.validation_fraction, seed=recipe.seed)
    if not parts.test:  # every class too small for a fold: the head alone
        return Tuned(
            "head",
            {
                "cut": cut.name,
                "why": "too few training photos for a validation fold (a class needs 4 or more); train with tune=head",
            },
        )
    extraction = cached_trunk_extraction(spec, trunk, weights, cut.name, compute, hooks, cache)
    try:
        (a_fit, y_fit), (a_val, y_val), (a_test, y_test) = split_features(
            extraction, spec, [parts.train, parts.test, split.test], recipe, hooks
        )
    finally:
        extraction.flush()
    hooks.log(f"Activations at {cut.name}: {extraction.computed} computed, {extraction.reused} reused")
    frozen = build_top(backbone, cut, shape)
    # the head-only candidate, on the frozen top's output: the backbone's own features (convolutions over
    # every photo's activations: worth all the threads, unlike the head's small steps)
    f_fit, f_val, f_test = (top_outputs(frozen, a) for a in (a_fit, a_val, a_test))
    factors = layout.scale(f_fit, recipe.depth)
    torch.manual_seed(recipe.seed)
    head = nn.Linear(f_fit.shape[1], len(class_names))
    weights_per_class = class_weights(y_fit, len(class_names)) if recipe.class_weighting == "balanced" else None
    with single_threaded(a_fit.device.type == "cpu"):
        fit_head(
            head,
            (f_fit * factors, y_fit),
            (f_test * factors, y_test),
            recipe,
            TrainingHooks(),
            class_weights=weights_per_class,
        )
    with torch.inference_mode():
        head_val = float((head(f_val * factors).argmax(1) == y_val).float().mean())

    top, tuned_head = build_top(backbone, cut, shape), copy.deepcopy(head)
    history = fit_top(
        top,
        tuned_head,
        factors,
        (a_fit, y_fit),
        (a_test, y_test),
        TopRecipe(epochs=recipe.tune_epochs, seed=recipe.seed),
        hooks,
        class_weights=weights_per_class,
    )
    val_logits = scaled_logits(top, tuned_head, factors, a_val)
    top_val = float((val_logits.argmax(1) == y_val).float().mean())
    summary = {
        "cut": cut.name,
        "layers": list(cut.layers),
        "epochs": recipe.tune_epochs,
        "validation_count": len(parts.test),
        "validation_accuracy": {"head": round(head_val, 4), "top": round(top_val, 4)},
        "activations_computed": extraction.computed,
        "activations_reused": extraction.reused,
        "activation_shape": list(shape),
    }
    kept = "top" if recipe.tune == "top" or top_val > head_val else "head"
    hooks.log(
        f"Tuned {cut.name}: validation {head_val:.3f} → {top_val:.3f} (head only → tuned, "
        f"{len(parts.test)} training photos held out); keeping the "
        + ("tuned top" if kept == "top" else "head")
        + (" as tune=top asks" if recipe.tune == "top" and top_val <= head_val else "")
    )
    if kept == "head":
        return Tuned("head", summary)

    temperature = fit_temperature(val_logits.double().numpy(), y_val.tolist())
    metrics = evaluate(
        scaled_logits(top, tuned_head, factors, a_test).double().numpy(),
        y_test.tolist(),
        split.test,
        class_names,
        temperature,
    )
    metrics.update(
        train_count=len(parts.train),
        validation_count=len(parts.test),
        images_through_backbone=extraction.computed,
        features_extracted=extraction.computed,
        features_reused=extraction.reused,
        best_epoch=None,
        cv_accuracy=None,
        calibration={**metrics["calibration"], "fitted_on": "validation_fold"},
    )
    report_uncertainty(metrics, hooks)
    metrics["feature_depth"] = {"depth": recipe.depth, "columns": int(f_fit.shape[1]), "layout": layout.tag()}
    with torch.no_grad():
        tuned_head.weight.copy_(fold_scale(tuned_head.weight, factors))
    views = 1 + recipe.augment_views  # the plain view of each photo comes first
    x_train = torch.cat([top_outputs(top, a_fit[::views]), top_outputs(top, a_val)])
    y_train = torch.cat([y_fit[::views], y_val])
    embed = (x_train, y_train, top_outputs(top, a_test))
    return Tuned(
        "top",
        summary,
        head_state={
            f"{spec.head_attr}.{key}": value.detach().cpu().clone() for key, value in tuned_head.state_dict().items()
        },
        tuned_state=top.tuned_state(),
        history=history,
        metrics=metrics,
        temperature=temperature,
        parts=parts,
        backbone_fingerprint=weights,
        feature_stages=tuple(stages),
        novelty_features=embed,
    )

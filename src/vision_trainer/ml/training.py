"""Fit a new linear head on frozen-backbone features; per-epoch log lines and final metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones import BackboneSpec, create_backbone, freeze, pretrained_backbone
from .crossval import cross_validate
from .data import LabelledImage, Normalizer, Split, augment_view, plain_view, validation_fold
from .errors import InvalidDatasetError, TrainingCancelled
from .features import CachedExtraction, FeatureCache, ViewSet
from .metrics import classification_report, expected_calibration_error, fit_temperature, softmax, wilson_interval
from .runtime import FeatureExtractor, RuntimeOptions, build_extractor, frozen_module_hash
from .selection import select_backbone
from .sgd import LinearHeads, cross_entropy


@dataclass(frozen=True)
class TrainConfig:
    """How to train: SGD with momentum 0.9, batch 32, cross-entropy, as in the seed, but lr 0.01.

    The seed's lr 0.001 leaves a head trained for a handful of epochs under-fitted (five flower classes,
    20 photos each, 5 epochs: 58% held-out accuracy against 69% at 0.01); on cached features the
    extra steps a lower rate would need are cheap, but users ask for few epochs.

    ``augment_views`` is the number of randomly augmented copies of every training image whose
    features are extracted, on top of one plain (resize + centre crop) view. ``validation_fraction``
    of the training split (per class) is held back only with ``early_stopping``: training then stops
    once the validation fold's loss has not improved for ``patience`` epochs, and the head of the best
    epoch is kept (never judged on the test split); the confidence temperature comes from
    cross-validation heads (out of fold). ``extract_batch_size`` views go through the backbone per
    forward pass; ``None`` is what the runtime runs fastest (``RuntimeOptions.batch_size``).
    """

    epochs: int = 5
    batch_size: int = 32
    extract_batch_size: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    augment_views: int = 2
    seed: int = 0
    num_workers: int = 0
    validation_fraction: float = 0.15
    early_stopping: bool = False
    patience: int = 3
    class_weighting: str = "none"
    pretrained: bool = True
    allow_download: bool = False
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


def _noop(*args: object) -> None:
    return None


@dataclass(frozen=True)
class TrainingHooks:
    """Callbacks into the caller: progress ``(phase, done, total, epoch)``, log lines, cancellation."""

    progress: Callable[[str, int, int, int | None], None] = _noop
    log: Callable[[str], None] = _noop
    should_stop: Callable[[], bool] = lambda: False


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


def backbone_fingerprint(spec: BackboneSpec, backbone: nn.Module) -> str:
    """Names a backbone's weights: its name and a hash of its tensors (computed once per module)."""
    return f"{spec.name}-{frozen_module_hash(backbone)[:16]}"


def features_fingerprint(weights: str, runtime: RuntimeOptions) -> str:
    """Names the features a backbone gives: its weights and where it runs (ONNX Runtime, PyTorch on the
    CPU or on CUDA give features that differ in the last digits)."""
    return f"{weights}-{runtime.kind}-{runtime.device.split(':')[0]}"


def train_classifier(
    spec: BackboneSpec,
    split: Split,
    class_names: Sequence[str],
    config: TrainConfig,
    hooks: TrainingHooks = TrainingHooks(),
    cache: FeatureCache | None = None,
) -> TrainResult:
    """Transfer learning: frozen pretrained backbone, new ``nn.Linear`` head, only the head trained.

    The backbone is frozen, so its features are computed once per image and view (and, with a
    ``cache``, taken from there when an earlier job computed them); the head then trains on them for
    ``config.epochs`` epochs; every epoch ends with a test-set evaluation and a log line
    ``Epoch i/N Loss: … Train Acc: … Test Acc: …``.

    Raises:
        InvalidDatasetError: the train or test set is empty.
        WeightsUnavailableError: pretrained weights were asked for and cannot be had.
        TrainingCancelled: ``hooks.should_stop()`` turned True.
    """
    if not split.train or not split.test:
        raise InvalidDatasetError("both the train and the test split need at least one image")
    torch.manual_seed(config.seed)
    hooks.progress("preparing", 0, 0, None)
    if config.pretrained:
        backbone = pretrained_backbone(spec, allow_download=config.allow_download)
    else:
        backbone = freeze(create_backbone(spec, num_classes=None, pretrained=False))
    weights = backbone_fingerprint(spec, backbone)
    fingerprint = features_fingerprint(weights, config.runtime)
    # A validation fold is only carved out to stop early; the temperature comes from out-of-fold heads.
    parts = (
        validation_fold(split.train, fraction=config.validation_fraction, seed=config.seed)
        if config.early_stopping
        else Split(train=list(split.train), test=[])
    )
    extraction = _extraction(spec, backbone, fingerprint, config, hooks, cache)
    try:
        return _train_head(extraction, spec, weights, split, parts, class_names, config, hooks)
    finally:
        extraction.flush()


def _train_head(
    extraction: CachedExtraction,
    spec: BackboneSpec,
    weights: str,
    split: Split,
    parts: Split,
    class_names: Sequence[str],
    config: TrainConfig,
    hooks: TrainingHooks,
) -> TrainResult:
    """Features of every split (through ``extraction``), then the head, its cross-validation and metrics."""
    (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = _extract_splits(
        extraction, spec, [parts.train, parts.test, split.test], config, hooks
    )
    hooks.log(f"Features: {extraction.computed} computed, {extraction.reused} reused")

    torch.manual_seed(config.seed)
    head = nn.Linear(spec.feature_size, len(class_names)).to(config.runtime.device)
    weights_per_class = class_weights(y_fit, len(class_names)) if config.class_weighting == "balanced" else None
    watch = (x_val, y_val) if config.early_stopping and len(y_val) else None

    with single_threaded(x_fit.device.type == "cpu"):
        history, best_epoch = fit_head(
            head, (x_fit, y_fit), (x_test, y_test), config, hooks, validation=watch, class_weights=weights_per_class
        )
        hooks.progress("evaluating", 0, len(split.test), config.epochs)
        cv = cross_validate(
            x_fit,
            y_fit,
            parts.train,
            views=1 + config.augment_views,
            num_classes=len(class_names),
            epochs=best_epoch or config.epochs,
            lr=config.lr,
            momentum=config.momentum,
            batch_size=config.batch_size,
            seed=config.seed,
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
    _report_uncertainty(metrics, hooks)
    return TrainResult(
        head_state={
            f"{spec.head_attr}.{key}": value.detach().cpu().clone() for key, value in head.state_dict().items()
        },
        history=history,
        metrics=metrics,
        temperature=temperature,
        backbone_fingerprint=weights,
        validation_items=list(parts.test),
        fit_items=list(parts.train),
    )


Features = tuple[torch.Tensor, torch.Tensor]


def plain_features(
    spec: BackboneSpec,
    backbone: nn.Module,
    items: Sequence[LabelledImage],
    config: TrainConfig,
    hooks: TrainingHooks = TrainingHooks(),
    cache: FeatureCache | None = None,
) -> Features:
    """Plain-view (resize + centre crop) features of ``items`` through the cache: ``([N, F], [N] labels)``."""
    fingerprint = features_fingerprint(backbone_fingerprint(spec, backbone), config.runtime)
    extraction = _extraction(spec, backbone, fingerprint, config, hooks, cache)
    prep = spec.preprocessing()
    views = ViewSet(plain_view(prep), augment_view(prep), 0, config.seed)
    total, done = extraction.missing(items, views), 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        hooks.progress("extracting", done, total, None)

    extraction.on_batch = on_batch
    try:
        return extraction.features(items, views)
    finally:
        extraction.flush()


def auto_backbone(
    specs: Sequence[BackboneSpec],
    split: Split,
    class_names: Sequence[str],
    config: TrainConfig,
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
        return plain_features(spec, backbone, items, config, hooks, cache)

    chosen, candidates, why = select_backbone(
        specs,
        split.train,
        len(class_names),
        extract,
        epochs=config.epochs,
        lr=config.lr,
        momentum=config.momentum,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    return chosen, [c.row() for c in candidates], why


def _extraction(
    spec: BackboneSpec,
    backbone: nn.Module,
    fingerprint: str,
    config: TrainConfig,
    hooks: TrainingHooks,
    cache: FeatureCache | None,
) -> CachedExtraction:
    extractor: list[FeatureExtractor] = []

    def build() -> FeatureExtractor:  # only when some feature is not cached
        if not extractor:
            extractor.append(
                build_extractor(backbone, name=spec.name, input_size=spec.input_size, options=config.runtime)
            )
        return extractor[0]

    return CachedExtraction(
        cache=cache,
        fingerprint=fingerprint,
        extractor=build,
        draft_size=spec.resize_size,
        normalize=Normalizer(spec.preprocessing()),
        device=config.runtime.device,
        batch_size=config.extract_batch_size or config.runtime.batch_size,
        num_workers=config.num_workers,
        should_stop=hooks.should_stop,
    )


def _extract_splits(
    extraction: CachedExtraction,
    spec: BackboneSpec,
    item_sets: Sequence[Sequence[LabelledImage]],
    config: TrainConfig,
    hooks: TrainingHooks,
) -> tuple[Features, Features, Features]:
    """Features of the fit set (plain + augmented views), then the validation and test sets (plain).

    Progress counts the views that go through the backbone (cached ones cost nothing).
    """
    fit_items, val_items, test_items = item_sets
    prep = spec.preprocessing()
    fit_views = ViewSet(plain_view(prep), augment_view(prep), config.augment_views, config.seed)
    plain = ViewSet(plain_view(prep), augment_view(prep), 0, config.seed)
    total = extraction.missing(fit_items, fit_views) + extraction.missing([*val_items, *test_items], plain)
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        hooks.progress("extracting", done, total, None)

    extraction.on_batch = on_batch
    return (
        extraction.features(fit_items, fit_views),
        extraction.features(val_items, plain),
        extraction.features(test_items, plain),
    )


class BestEpoch:
    """Remembers the head of the epoch with the lowest validation loss and says when to stop."""

    def __init__(self, head: nn.Linear, validation: Features, patience: int) -> None:
        self.head, self.validation, self.patience = head, validation, patience
        self.best_loss, self.best_epoch, self.waited = float("inf"), 0, 0
        self.state = {k: v.clone() for k, v in head.state_dict().items()}

    def should_stop(self, epoch: int) -> bool:
        self.head.eval()
        with torch.inference_mode():
            loss = float(nn.functional.cross_entropy(self.head(self.validation[0]), self.validation[1]))
        if loss < self.best_loss - 1e-6:
            self.best_loss, self.best_epoch, self.waited = loss, epoch, 0
            self.state = {k: v.clone() for k, v in self.head.state_dict().items()}
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore(self) -> None:
        self.head.load_state_dict(self.state)


@contextmanager
def single_threaded(enabled: bool = True) -> Iterator[None]:
    """Run torch on one CPU thread for a while: a linear head's batches are so small that splitting each
    operation over threads costs more than it saves (10 epochs on 700 features: 0.09 s on one thread,
    1.5 s on two while the machine was busy). The backbone runs on ONNX Runtime's own threads."""
    if not enabled:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``n / (classes * count)`` per class: every class weighs the same in the loss, whatever its size."""
    counts = torch.bincount(y, minlength=num_classes).float().clamp(min=1)
    return (len(y) / (num_classes * counts)).to(y.device)


ROUGH_BELOW = 30


def _report_uncertainty(metrics: dict[str, Any], hooks: TrainingHooks) -> None:
    """Add the 95 % interval of the test accuracy, and say so when the test split is too small to trust."""
    n = metrics["test_count"]
    low, high = wilson_interval(round(metrics["test_accuracy"] * n), n)
    metrics["test_accuracy_ci"] = [round(low, 4), round(high, 4)]
    warnings = []
    if n < ROUGH_BELOW:
        warnings.append(
            f"Test accuracy {metrics['test_accuracy']:.4f} is rough: it rests on {n} test photo(s); "
            f"95 % interval {low:.2f}-{high:.2f}. Add photos for a figure you can trust."
        )
    metrics["warnings"] = warnings
    cv = metrics.get("cv_accuracy")
    line = f"Test accuracy {metrics['test_accuracy']:.4f} on {n} photos (95 % interval {low:.4f}-{high:.4f})"
    if cv:
        line += (
            f"; cross-validated on the training photos {cv['mean']:.4f} ± {cv['std']:.4f} ({len(cv['folds'])} folds)"
        )
    hooks.log(line)
    for warning in warnings:
        hooks.log(warning)


def fit_head(
    head: nn.Linear,
    train: Features,
    test: Features,
    config: TrainConfig,
    hooks: TrainingHooks,
    validation: Features | None = None,
    class_weights: torch.Tensor | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Train ``head`` with SGD and cross-entropy on cached features, evaluating after each epoch.

    With ``validation`` features, stop early as ``config.patience`` says and keep the best epoch's head.

    Returns:
        One ``{epoch, loss, train_acc, test_acc}`` dict per epoch run, and the epoch whose head is kept.
    """
    x_train, y_train = train
    # SGD with momentum on the head's own tensors (ml.sgd: the same updates as torch.optim.SGD, faster).
    sgd = LinearHeads(head.weight.data[None], head.bias.data[None], lr=config.lr, momentum=config.momentum)
    row_weights = class_weights[y_train] if class_weights is not None else None
    generator = torch.Generator().manual_seed(config.seed)
    best = BestEpoch(head, validation, config.patience) if validation is not None else None
    history = []
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(y_train), generator=generator).to(y_train.device)
        loss_sum = torch.zeros((), device=x_train.device)
        correct = torch.zeros((), dtype=torch.long, device=x_train.device)
        for start in range(0, len(order), config.batch_size):
            if hooks.should_stop():
                raise TrainingCancelled(f"cancelled in epoch {epoch}")
            index = order[start : start + config.batch_size]
            weights = None if row_weights is None else row_weights[index]
            logits = sgd.step(x_train[index], y_train[index], weights)
            loss_sum += cross_entropy(logits, y_train[index], weights)[0] * len(index)
            correct += (logits[0].argmax(1) == y_train[index]).sum()
        test_acc = accuracy(head, *test)
        row = {
            "epoch": epoch,
            "loss": round(float(loss_sum) / len(y_train), 4),
            "train_acc": round(int(correct) / len(y_train), 4),
            "test_acc": round(test_acc, 4),
        }
        history.append(row)
        hooks.log(
            f"Epoch {epoch}/{config.epochs} Loss: {row['loss']:.4f} "
            f"Train Acc: {row['train_acc']:.4f} Test Acc: {row['test_acc']:.4f}"
        )
        hooks.progress("training", epoch, config.epochs, epoch)
        if best is not None and best.should_stop(epoch):
            hooks.log(
                f"Early stopping after epoch {epoch}: the validation loss has not improved for "
                f"{config.patience} epochs; keeping epoch {best.best_epoch}"
            )
            break
    if best is None:
        return history, len(history)
    best.restore()
    return history, best.best_epoch


def accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``head`` on features ``x`` with labels ``y``."""
    head.eval()
    with torch.inference_mode():
        return float((head(x).argmax(1) == y).float().mean())


def logits_of(head: nn.Linear, x: torch.Tensor) -> np.ndarray:
    if len(x) == 0:
        return np.zeros((0, head.out_features))
    head.eval()
    with torch.inference_mode():
        return head(x).cpu().double().numpy()


def evaluate(
    logits: np.ndarray,
    y_true: list[int],
    items: Sequence[LabelledImage],
    class_names: Sequence[str],
    temperature: float,
) -> dict[str, Any]:
    """The evaluation report on the test split: accuracy, per-class scores, confusion matrix,
    misclassified images (by stored image id) and calibration before/after the temperature."""
    before, after = softmax(logits), softmax(logits / temperature)
    predicted = after.argmax(axis=1)
    report = classification_report(y_true, predicted.tolist(), class_names)
    misclassified = [
        {
            "image_id": item.path.stem,
            "filename": item.name,
            "true": class_names[t],
            "predicted": class_names[int(p)],
            "confidence": round(float(after[i, p]), 4),
        }
        for i, (item, t, p) in enumerate(zip(items, y_true, predicted))
        if t != p
    ]
    return {
        "test_accuracy": report["accuracy"],
        "test_count": len(y_true),
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "misclassified": misclassified,
        "calibration": {
            "temperature": temperature,
            "ece_before": round(expected_calibration_error(before, y_true), 4),
            "ece_after": round(expected_calibration_error(after, y_true), 4),
        },
    }

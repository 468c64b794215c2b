"""End-to-end fine-tuning (``tune=full``): every layer of the pretrained backbone and a new head train
together on freshly augmented views of the training photos every epoch, the way fine-tuning tools do.

Nothing is frozen, so nothing can be cached: every epoch decodes, augments and pushes every training photo
through the whole network forwards and backwards. It is meant for CUDA (mixed precision there); on the
CPU it is allowed and the log says first how long it should take. The whole network is stored as a tuned
"top" over an empty trunk (the cut point ``full``), so checkpoints, serving, exports, heatmaps and novelty
treat it as any tuned model. It reads the final features only (no pooled stages): every layer adapts, and
its checkpoint stays the seed's shape.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .backbones import BackboneSpec
from .data import ImageDataset, LabelledImage, Normalizer, Split, augment_view, plain_view, validation_fold
from .errors import TrainingCancelled
from .evaluation import evaluate, report_uncertainty
from .fit import class_weights
from .hooks import TrainingHooks
from .metrics import fit_temperature
from .recipe import Compute, Recipe
from .tuned import Tuned
from .tuning import Top, TopRecipe, build_top, loss_scaler, mixed_precision, whole_network


class Network:
    """The network being fine-tuned: its layers (a ``Top`` over the whole input) and its head."""

    def __init__(self, top: Top, head: nn.Linear, spec: BackboneSpec, device: str, num_workers: int) -> None:
        self.top, self.head, self.device, self.num_workers = top, head, device, num_workers
        self.preprocessing = spec.preprocessing()
        self.normalize = Normalizer(self.preprocessing)
        self.draft_size = spec.resize_size

    def loader(self, items: Sequence[LabelledImage], *, augment: bool, seed: int = 0) -> DataLoader[Any]:
        view = (augment_view if augment else plain_view)(self.preprocessing)
        # view_numbers None: a fresh random view every time a photo is drawn (no cache to keep it stable)
        dataset = ImageDataset(items, [view], draft_size=self.draft_size)
        generator = torch.Generator().manual_seed(seed) if augment else None
        return DataLoader(
            dataset,
            batch_size=32,
            shuffle=augment,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=self.device.startswith("cuda"),
        )

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A loader's uint8 batch ``[N, 1, 3, S, S]`` as the top's flat float input on the device."""
        return self.normalize(images[:, 0]).to(self.device, non_blocking=True).flatten(1)

    def outputs(self, items: Sequence[LabelledImage], hooks: TrainingHooks) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of the plain views of ``items``, float32 on the CPU."""
        features, logits = [], []
        self.top.eval()
        with torch.inference_mode(), mixed_precision(self.device):
            for images, _ in self.loader(items, augment=False):
                if hooks.should_stop():
                    raise TrainingCancelled("cancelled while evaluating the fine-tuned network")
                f = self.top(self.inputs(images))
                features.append(f.float().cpu())
                logits.append(self.head(f).float().cpu())
        if not features:
            return torch.zeros((0, self.head.in_features)), torch.zeros((0, self.head.out_features))
        return torch.cat(features), torch.cat(logits)


def labels_of(items: Sequence[LabelledImage]) -> torch.Tensor:
    return torch.tensor([item.label for item in items], dtype=torch.long)


def train_full(
    spec: BackboneSpec,
    backbone: nn.Module,
    weights: str,
    split: Split,
    class_names: Sequence[str],
    recipe: Recipe,
    compute: Compute,
    hooks: TrainingHooks,
) -> Tuned:
    """Fine-tune every layer of ``backbone`` (a copy) with a new head for ``recipe.tune_epochs`` epochs.

    Raises:
        TrainingCancelled: ``hooks.should_stop()`` turned True.
    """
    cut = whole_network(spec)
    parts = validation_fold(split.train, fraction=recipe.validation_fraction, seed=recipe.seed)
    if not parts.test:
        return Tuned(
            "head",
            {"cut": cut.name, "why": "too few training photos for a validation fold (a class needs 4 or more)"},
        )
    device = compute.runtime.device
    torch.manual_seed(recipe.seed)
    shape = (3, spec.input_size, spec.input_size)
    top = build_top(backbone, cut, shape).to(device)
    head = nn.Linear(spec.feature_size, len(class_names)).to(device)
    network = Network(top, head, spec, device, compute.num_workers)
    settings = TopRecipe(epochs=recipe.tune_epochs, seed=recipe.seed)
    weights_per_class = (
        class_weights(labels_of(parts.train), len(class_names)) if recipe.class_weighting == "balanced" else None
    )
    history = fit_full(network, parts.train, split.test, settings, hooks, weights_per_class)

    f_val, val_logits = network.outputs(parts.test, hooks)
    f_fit, _ = network.outputs(parts.train, hooks)
    f_test, test_logits = network.outputs(split.test, hooks)
    y_val = labels_of(parts.test)
    top_val = float((val_logits.argmax(1) == y_val).float().mean())
    hooks.log(f"Fine-tuned end to end: validation {top_val:.3f} ({len(parts.test)} training photos held out)")
    temperature = fit_temperature(val_logits.double().numpy(), y_val.tolist())
    metrics = evaluate(
        test_logits.double().numpy(), labels_of(split.test).tolist(), split.test, class_names, temperature
    )
    passes = (
        settings.epochs * (len(parts.train) + len(split.test)) + len(parts.train) + len(parts.test) + len(split.test)
    )
    metrics.update(
        train_count=len(parts.train),
        validation_count=len(parts.test),
        images_through_backbone=passes,
        features_extracted=0,
        features_reused=0,
        best_epoch=None,
        cv_accuracy=None,
        calibration={**metrics["calibration"], "fitted_on": "validation_fold"},
    )
    report_uncertainty(metrics, hooks)
    metrics["feature_depth"] = {"depth": "final", "columns": spec.feature_size, "layout": "final"}
    summary = {
        "cut": cut.name,
        "layers": list(cut.layers),
        "epochs": settings.epochs,
        "validation_count": len(parts.test),
        "validation_accuracy": {"top": round(top_val, 4)},  # no head-only candidate: full is asked for by name
    }
    top.cpu()
    head.cpu()
    embed = (torch.cat([f_fit, f_val]), torch.cat([labels_of(parts.train), y_val]), f_test)
    return Tuned(
        "top",
        summary,
        head_state={f"{spec.head_attr}.{key}": value.detach().clone() for key, value in head.state_dict().items()},
        tuned_state=top.tuned_state(),
        history=history,
        metrics=metrics,
        temperature=temperature,
        parts=parts,
        backbone_fingerprint=weights,
        feature_stages=(),
        novelty_features=embed,
    )


class TimeEstimate:
    """Logs how long the fine-tuning should take, from the steps after the first (which pays for warming
    up) up to the third, or the whole first epoch when it is shorter."""

    def __init__(self, device: str, epochs: int, photos: int, tested: int, hooks: TrainingHooks) -> None:
        self.device, self.epochs, self.photos, self.tested, self.hooks = device, epochs, photos, tested, hooks
        self.batches, self.mark, self.marked = 0, time.perf_counter(), 0

    def batch_done(self, seen: int, *, last: bool) -> bool:
        """Count a finished training step; True once the estimate is logged."""
        self.batches += 1
        now = time.perf_counter()
        if self.batches == 1 and not last:
            self.mark, self.marked = now, seen
            return False
        if self.batches < 4 and not last:
            return False
        per_photo = (now - self.mark) / max(seen - self.marked, 1)
        # a forward pass alone (the test photos every epoch, then every photo once) is about a third of a step
        forwards = self.epochs * self.tested + 2 * self.photos + self.tested
        expected = per_photo * (self.epochs * self.photos + forwards / 3)
        self.hooks.log(
            f"Fine-tuning end to end on {self.device}: about {expected:.0f} s for {self.epochs} epochs of "
            f"{self.photos} photos ({1 / per_photo:.1f} photos/s); tune=top is a fraction of that"
        )
        return True


def fit_full(
    network: Network,
    train: Sequence[LabelledImage],
    test: Sequence[LabelledImage],
    recipe: TopRecipe,
    hooks: TrainingHooks,
    class_weights: torch.Tensor | None = None,
) -> list[dict[str, float]]:
    """The epochs: AdamW (the pretrained layers at ``layer_lr_share`` of the head's rate), a cosine schedule,
    cross-entropy, BatchNorm statistics kept (as ``fit_top``), a fresh augmented view of every photo each
    epoch; after a few steps the log gives the expected time (``TimeEstimate``)."""
    top, head = network.top, network.head
    for param in (*top.parameters(), *head.parameters()):
        param.requires_grad = True
    optimizer = torch.optim.AdamW(
        [
            {"params": list(top.parameters()), "lr": recipe.lr * recipe.layer_lr_share},
            {"params": list(head.parameters()), "lr": recipe.lr},
        ],
        weight_decay=recipe.weight_decay,
    )
    batches = (len(train) + 31) // 32
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, recipe.epochs * batches))
    scaler = loss_scaler(network.device)
    loss_fn = nn.CrossEntropyLoss(weight=None if class_weights is None else class_weights.to(network.device))
    y_test = labels_of(test)
    history: list[dict[str, float]] = []
    estimate, estimated = TimeEstimate(network.device, recipe.epochs, len(train), len(test), hooks), False
    for epoch in range(1, recipe.epochs + 1):
        top.eval()  # BatchNorm keeps its statistics; every layer still trains
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in network.loader(train, augment=True, seed=recipe.seed + epoch):
            if hooks.should_stop():
                raise TrainingCancelled(f"cancelled in fine-tuning epoch {epoch}")
            labels = labels.to(network.device)
            with mixed_precision(network.device):
                logits = head(top(network.inputs(images)))
                loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            if epoch == 1 and not estimated:
                estimated = estimate.batch_done(seen, last=seen == len(train))
        _, test_logits = network.outputs(test, hooks)
        test_acc = float((test_logits.argmax(1) == y_test).float().mean()) if len(y_test) else 0.0
        row = {
            "epoch": epoch,
            "loss": round(loss_sum / max(seen, 1), 4),
            "train_acc": round(correct / max(seen, 1), 4),
            "test_acc": round(test_acc, 4),
        }
        history.append(row)
        hooks.log(
            f"Tuned epoch {epoch}/{recipe.epochs} Loss: {row['loss']:.4f} "
            f"Train Acc: {row['train_acc']:.4f} Test Acc: {row['test_acc']:.4f}"
        )
        hooks.progress("tuning", epoch, recipe.epochs, epoch)
    for param in (*top.parameters(), *head.parameters()):
        param.requires_grad = False
    top.eval()
    return history

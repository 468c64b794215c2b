"""Fit a linear head on cached features: SGD epochs, per-epoch log lines, early stopping, best epoch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .errors import TrainingCancelled
from .extraction import Features
from .hooks import TrainingHooks
from .recipe import Recipe
from .sgd import LinearHeads, cross_entropy


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


def fit_head(
    head: nn.Linear,
    train: Features,
    test: Features,
    recipe: Recipe,
    hooks: TrainingHooks,
    validation: Features | None = None,
    class_weights: torch.Tensor | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Train ``head`` with SGD and cross-entropy on cached features, evaluating after each epoch.

    With ``validation`` features, stop early as ``recipe.patience`` says and keep the best epoch's head.

    Returns:
        One ``{epoch, loss, train_acc, test_acc}`` dict per epoch run, and the epoch whose head is kept.
    """
    x_train, y_train = train
    # SGD with momentum on the head's own tensors (ml.sgd: the same updates as torch.optim.SGD, faster).
    sgd = LinearHeads(head.weight.data[None], head.bias.data[None], lr=recipe.lr, momentum=recipe.momentum)
    row_weights = class_weights[y_train] if class_weights is not None else None
    generator = torch.Generator().manual_seed(recipe.seed)
    best = BestEpoch(head, validation, recipe.patience) if validation is not None else None
    history = []
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(len(y_train), generator=generator).to(y_train.device)
        loss_sum = torch.zeros((), device=x_train.device)
        correct = torch.zeros((), dtype=torch.long, device=x_train.device)
        for start in range(0, len(order), recipe.batch_size):
            if hooks.should_stop():
                raise TrainingCancelled(f"cancelled in epoch {epoch}")
            index = order[start : start + recipe.batch_size]
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
            f"Epoch {epoch}/{recipe.epochs} Loss: {row['loss']:.4f} "
            f"Train Acc: {row['train_acc']:.4f} Test Acc: {row['test_acc']:.4f}"
        )
        hooks.progress("training", epoch, recipe.epochs, epoch)
        if best is not None and best.should_stop(epoch):
            hooks.log(
                f"Early stopping after epoch {epoch}: the validation loss has not improved for "
                f"{recipe.patience} epochs; keeping epoch {best.best_epoch}"
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

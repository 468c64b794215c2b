"""ml.sgd: the written-out gradient takes the same steps as autograd with torch.optim.SGD, in the
heads alone and in ``fit_head`` with early stopping; prediction feeds the backbone its own batch size."""

from __future__ import annotations

import copy

import torch
from PIL import Image
from torch import nn

from vision_trainer.ml.predictor import Predictor
from vision_trainer.ml.recipe import Recipe
from vision_trainer.ml.sgd import LinearHeads, cross_entropy
from vision_trainer.ml.training import TrainingHooks, class_weights, fit_head


def _data(rows: int = 90, features: int = 24, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(rows, features, generator=generator), torch.randint(0, classes, (rows,), generator=generator)


def _torch_head(x, y, init: nn.Linear, class_weights=None, keep=None, steps: int = 12) -> nn.Linear:
    head = nn.Linear(x.shape[1], init.out_features)
    head.load_state_dict(init.state_dict())
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        index = torch.arange(step * 7, step * 7 + 16) % len(y)
        rows = index if keep is None else index[keep[index]]
        loss = nn.functional.cross_entropy(head(x[rows]), y[rows], weight=class_weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head


def test_one_head_steps_like_torch_sgd_with_and_without_class_weights() -> None:
    x, y = _data()
    for per_class in (None, torch.tensor([0.5, 2.0, 1.0])):
        torch.manual_seed(0)
        init = nn.Linear(x.shape[1], 3)
        expected = _torch_head(x, y, init, per_class)
        weight, bias = init.weight.detach().clone()[None], init.bias.detach().clone()[None]
        sgd = LinearHeads(weight, bias, lr=0.05, momentum=0.9)
        for step in range(12):
            index = torch.arange(step * 7, step * 7 + 16) % len(y)
            weights = None if per_class is None else per_class[y[index]]
            logits = sgd.step(x[index], y[index], weights)
            assert logits.shape == (1, 16, 3)
        assert torch.allclose(weight[0], expected.weight, atol=1e-6)
        assert torch.allclose(bias[0], expected.bias, atol=1e-6)
        moved = (weight[0] - init.weight).abs().max()
        assert moved > 1e-2  # the steps did something


def test_batched_heads_leave_out_their_rows_like_separate_heads() -> None:
    x, y = _data()
    folds = torch.arange(len(y)) % 3
    torch.manual_seed(0)
    inits = [nn.Linear(x.shape[1], 3) for _ in range(3)]
    weight = torch.stack([h.weight.detach() for h in inits]).clone()
    bias = torch.stack([h.bias.detach() for h in inits]).clone()
    sgd = LinearHeads(weight, bias, lr=0.05, momentum=0.9)
    for step in range(12):
        index = torch.arange(step * 7, step * 7 + 16) % len(y)
        keep = (folds[index].view(1, -1) != torch.arange(3).view(3, 1)).float()
        sgd.step(x[index], y[index], keep)
    for fold, init in enumerate(inits):
        expected = _torch_head(x, y, init, keep=folds != fold)
        assert torch.allclose(weight[fold], expected.weight, atol=1e-6)
        assert torch.allclose(bias[fold], expected.bias, atol=1e-6)


def test_cross_entropy_matches_torch() -> None:
    x, y = _data()
    logits = torch.randn(2, len(y), 3)
    weights = torch.tensor([0.5, 2.0, 1.0])
    for head in range(2):
        assert torch.isclose(cross_entropy(logits, y)[head], nn.functional.cross_entropy(logits[head], y))
        assert torch.isclose(
            cross_entropy(logits, y, weights[y])[head],
            nn.functional.cross_entropy(logits[head], y, weight=weights),
        )


def _autograd_fit(head: nn.Linear, x, y, x_val, y_val, config: Recipe, class_weights) -> tuple[list[float], int]:
    """fit_head as it was written with autograd and torch.optim.SGD, early stopping included."""
    optimizer = torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum)
    criterion = nn.CrossEntropyLoss(weight=class_weights)
    generator = torch.Generator().manual_seed(config.seed)
    losses, best_loss, best_epoch, waited, state = [], float("inf"), 0, 0, None
    for epoch in range(1, config.epochs + 1):
        order, total = torch.randperm(len(y), generator=generator), 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            loss = criterion(head(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        losses.append(round(total / len(y), 4))
        with torch.no_grad():
            val_loss = float(nn.functional.cross_entropy(head(x_val), y_val))
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            state = copy.deepcopy(head.state_dict())
        else:
            waited += 1
            if waited >= config.patience:
                break
    head.load_state_dict(state)
    return losses, best_epoch


def test_fit_head_takes_the_steps_autograd_took_and_restores_the_best_epoch() -> None:
    x, y = _data(rows=120)
    x_val, y_val = _data(rows=40)
    y_val = y_val.roll(7)  # labels that disagree: the validation loss rises and training stops early
    config = Recipe(epochs=30, lr=0.2, patience=2, early_stopping=True)
    weights = class_weights(y, 3) * torch.tensor([1.0, 2.0, 0.5])
    torch.manual_seed(0)
    expected_head = nn.Linear(x.shape[1], 3)
    head = copy.deepcopy(expected_head)
    expected_losses, expected_best = _autograd_fit(expected_head, x, y, x_val, y_val, config, weights)

    history, best = fit_head(head, (x, y), (x_val, y_val), config, TrainingHooks(), (x_val, y_val), weights)

    assert best == expected_best and len(history) < config.epochs  # it did stop early
    assert [row["loss"] for row in history] == expected_losses
    assert torch.allclose(head.weight, expected_head.weight, atol=1e-5)
    assert torch.allclose(head.bias, expected_head.bias, atol=1e-5)


class _CountingExtractor:
    batch_size = 3

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(images))
        return images.mean(dim=(2, 3))  # [N, 3] features


def test_prediction_feeds_the_backbone_its_own_batch_size() -> None:
    extractor = _CountingExtractor()
    preprocessing = {"input_size": 8, "resize_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3}
    predictor = Predictor(extractor, nn.Linear(3, 2), class_names=["a", "b"], preprocessing=preprocessing)
    images = [Image.new("RGB", (12, 12), (i * 30, 0, 0)) for i in range(7)]
    probabilities = predictor.probabilities(images)
    assert extractor.batches == [3, 3, 1] and probabilities.shape == (7, 2)

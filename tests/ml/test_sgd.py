"""ml.sgd: the written-out gradient takes the same steps as autograd with torch.optim.SGD."""

from __future__ import annotations

import torch
from torch import nn

from vision_trainer.ml.sgd import LinearHeads, cross_entropy


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
    for class_weights in (None, torch.tensor([0.5, 2.0, 1.0])):
        torch.manual_seed(0)
        init = nn.Linear(x.shape[1], 3)
        expected = _torch_head(x, y, init, class_weights)
        weight, bias = init.weight.detach().clone()[None], init.bias.detach().clone()[None]
        sgd = LinearHeads(weight, bias, lr=0.05, momentum=0.9)
        for step in range(12):
            index = torch.arange(step * 7, step * 7 + 16) % len(y)
            weights = None if class_weights is None else class_weights[y[index]]
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

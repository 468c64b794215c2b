"""The head's training on cached features: the written-out cross-entropy gradient (ml.sgd) against
autograd with torch.optim.SGD, for the final head and the five cross-validation heads, side by side.

    .venv/bin/python bench/head_steps.py                 # 326 photos x 2 views, 1280 features, 10 epochs

This is what a retrain spends after its new photos' features (bench/retrain.py's median retrain: 0.47 s
in all); the sizes default to that job's. Both sides take the same steps (tests/ml/test_sgd.py).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from vision_trainer.ml.crossval import assign_folds, cross_validate  # noqa: E402
from vision_trainer.ml.data import LabelledImage  # noqa: E402
from vision_trainer.ml.fit import fit_head, single_threaded  # noqa: E402
from vision_trainer.ml.hooks import TrainingHooks  # noqa: E402
from vision_trainer.ml.recipe import Recipe  # noqa: E402


def autograd_head(head: nn.Linear, x: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> None:
    optimizer = torch.optim.SGD(head.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    generator = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            loss = nn.functional.cross_entropy(head(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def autograd_folds(x: torch.Tensor, y: torch.Tensor, row_fold: torch.Tensor, k: int, classes: int, recipe: Recipe):
    """k heads as one batched layer, each leaving its fold out of the loss, with autograd."""
    bound = 1 / math.sqrt(x.shape[1])
    weight = ((torch.rand(k, classes, x.shape[1]) * 2 - 1) * bound).requires_grad_()
    bias = ((torch.rand(k, classes) * 2 - 1) * bound).requires_grad_()
    optimizer = torch.optim.SGD([weight, bias], lr=recipe.lr, momentum=recipe.momentum)
    generator = torch.Generator().manual_seed(recipe.seed)
    heads = torch.arange(k).view(k, 1)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            keep = (row_fold[index].view(1, -1) != heads).float()
            logits = torch.einsum("bf,kcf->kbc", x[index], weight) + bias[:, None, :]
            nll = nn.functional.cross_entropy(logits.reshape(-1, classes), y[index].repeat(k), reduction="none")
            loss = ((nll.view(k, -1) * keep).sum(1) / keep.sum(1).clamp(min=1)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def timed(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=326)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--features", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(args.photos) % args.classes
    items = [LabelledImage(Path(f"{i}.png"), int(labels[i]), f"{i:064x}") for i in range(args.photos)]
    x = torch.randn(args.photos * args.views, args.features, generator=generator).abs()
    y = labels.repeat_interleave(args.views)
    recipe = Recipe(epochs=args.epochs)
    row_fold = torch.from_numpy(assign_folds(items, 5, 0)).repeat_interleave(args.views)
    rows = []
    with single_threaded():
        sides = {
            "ml.sgd (written-out gradient)": (
                lambda: fit_head(
                    nn.Linear(args.features, args.classes), (x, y), (x[:50], y[:50]), recipe, TrainingHooks()
                ),
                lambda: cross_validate(x, y, items, recipe, views=args.views, num_classes=args.classes),
            ),
            "autograd + torch.optim.SGD": (
                lambda: autograd_head(nn.Linear(args.features, args.classes), x, y, recipe),
                lambda: autograd_folds(x, y, row_fold, 5, args.classes, recipe),
            ),
        }
        for name, (head, folds) in sides.items():
            head_s, folds_s = timed(head, args.repeat), timed(folds, args.repeat)
            rows.append({"side": name, "head_s": head_s, "five_cv_heads_s": folds_s, "total_s": head_s + folds_s})
    saved = rows[1]["total_s"] - rows[0]["total_s"]
    report(
        "Head training on cached features",
        rows,
        {"rows x features": f"{len(y)} x {args.features}", "epochs": args.epochs, "ml.sgd saves (s)": round(saved, 3)},
    )


if __name__ == "__main__":
    main()

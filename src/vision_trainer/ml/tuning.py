"""Tuning the top of a frozen backbone on cached activations (``tune=top``).

A frozen last layer is the ceiling on photos unlike ImageNet; retraining the backbone's last layers
lifts it. The trunk below those layers stays frozen, so its output (the *activations* at the cut) is
computed once per photo and view and cached like features; only the top layers and a new head train,
epoch after epoch, on the cache.

- ``Trunk``: the frozen backbone up to a cut point (its registry entry's ``cut_points``), returning one
  flat vector per image: the activation map at the cut, then the pooled stages the features read
  (``ml.depths``). One vector per image lets it travel through the runtimes and the feature cache as
  features do.
- ``Top``: the layers above the cut (a copy of them, trainable), global average pooling, and the
  pooled stages passed through: its output is laid out as the frozen backbone's features, so a head,
  novelty and the feature scale read it unchanged.
- ``TunedHead``: ``Top`` then the linear head; what serving runs on the shared trunk's output.
- ``fit_top``: the top and the head trained together from the head-only solution (a linear probe
  first, then the layers: the head does not start from noise that would pull the pretrained layers
  off course), AdamW, cross-entropy, the BatchNorm statistics kept (small batches would spoil them).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .backbones import BackboneSpec, CutPoint
from .errors import TrainingCancelled
from .hooks import TrainingHooks


class Trunk(nn.Module):
    """The frozen backbone up to ``cut``: images ``[N, 3, S, S]`` to ``[N, C*h*w + stages]``."""

    def __init__(self, backbone: nn.Module, cut: CutPoint, stages: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(cut.trunk)
        self.steps = nn.ModuleList(backbone.get_submodule(name) for name in self.names)
        self.stage_names = tuple(stages)
        missing = [name for name in self.stage_names if name not in self.names]
        if missing:
            raise ValueError(f"stages {missing} are not below the cut {cut.name!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for name, step in zip(self.names, self.steps):
            x = step(x)
            if name in self.stage_names:
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat([x.flatten(1), *pooled], dim=1)


_trunks: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, tuple[str, ...]], Trunk]] = weakref.WeakKeyDictionary()
_trunks_lock = threading.Lock()


def shared_trunk(backbone: nn.Module, cut: CutPoint, stages: Sequence[str]) -> Trunk:
    """One ``Trunk`` per (shared backbone, cut, stages), so training and every tuned model serving on that
    backbone share its exported runtime session and weight hash."""
    key = (cut.name, tuple(stages))
    with _trunks_lock:
        trunks = _trunks.setdefault(backbone, {})
        if key not in trunks:
            trunks[key] = Trunk(backbone, cut, stages).eval()
        return trunks[key]


def activation_shape(trunk: Trunk, input_size: int) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the activation map at the trunk's cut, for inputs of ``input_size``."""
    x = torch.zeros(1, 3, input_size, input_size)
    with torch.inference_mode():
        for step in trunk.steps:
            x = step(x)
    return int(x.shape[1]), int(x.shape[2]), int(x.shape[3])


class Top(nn.Module):
    """The layers above a cut, then global average pooling; the pooled stages pass through behind."""

    def __init__(self, layers: Mapping[str, nn.Module], shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.names = tuple(layers)
        self.layers = nn.ModuleList(layers.values())
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.shape[0] * self.shape[1] * self.shape[2]
        act = x[:, :size].reshape(-1, *self.shape)
        for layer in self.layers:
            act = layer(act)
        return torch.cat([act.mean(dim=(2, 3)), x[:, size:]], dim=1)

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """The layers' tensors under the backbone's own keys (``conv_head.weight``, ``layer4.0.conv1.weight``)."""
        return {
            f"{name}.{key}": value.detach().cpu().clone()
            for name, layer in zip(self.names, self.layers)
            for key, value in layer.state_dict().items()
        }


def hookless_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without the hooks others hung on it (the shared backbone's stage pooling
    keeps thread-local state in its hooks, which neither copies nor belongs to the copy); the module
    itself is not touched, so the threads serving it meanwhile are not disturbed."""
    memo: dict[int, Any] = {}
    for part in module.modules():
        for key, value in vars(part).items():
            if "hook" in key and isinstance(value, dict):
                memo[id(value)] = type(value)()
    return copy.deepcopy(module, memo)


def build_top(backbone: nn.Module, cut: CutPoint, shape: tuple[int, int, int]) -> Top:
    """A trainable copy of ``backbone``'s layers above ``cut`` (the backbone itself is left alone)."""
    layers = {name: hookless_copy(backbone.get_submodule(name)) for name in cut.layers}
    top = Top(layers, shape)
    for param in top.parameters():
        param.requires_grad = True
    return top.eval()


def load_top(backbone: nn.Module, cut: CutPoint, shape: tuple[int, int, int], state: Mapping[str, torch.Tensor]) -> Top:
    """A stored top: the layers above ``cut`` with their tuned tensors (``Top.tuned_state``'s keys).

    Raises:
        KeyError, RuntimeError: the tensors do not fit the layers.
    """
    top = build_top(backbone, cut, shape)
    for name, layer in zip(top.names, top.layers):
        prefix = f"{name}."
        layer.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
    for param in top.parameters():
        param.requires_grad = False
    return top.eval()


class TunedHead(nn.Module):
    """A tuned model's own part: its top, then its linear head (on the shared trunk's output)."""

    def __init__(self, top: Top, linear: nn.Linear) -> None:
        super().__init__()
        self.top, self.linear = top, linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features the head reads (the frozen backbone's layout), for novelty."""
        return self.top(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.top(x))


@dataclass(frozen=True)
class TopRecipe:
    """How the top trains: AdamW, the layers at a tenth of the head's rate (they start pretrained)."""

    epochs: int
    batch_size: int = 32
    lr: float = 1e-3
    layer_lr_share: float = 0.1
    weight_decay: float = 1e-4
    seed: int = 0


@contextlib.contextmanager
def mixed_precision(device: str) -> Iterator[None]:
    """bfloat16 autocast on CUDA where the GPU has it, float16 elsewhere on CUDA; nothing on the CPU."""
    if not device.startswith("cuda"):
        yield
        return
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        yield


def loss_scaler(device: str) -> torch.amp.GradScaler:
    """Loss scaling for float16 autocast (CUDA without bfloat16); a pass-through everywhere else."""
    float16 = device.startswith("cuda") and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda" if device.startswith("cuda") else "cpu", enabled=float16)


def top_outputs(top: Top, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``top`` over activations ``x`` (any float dtype), in batches, float32."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            out.append(top(x[start : start + batch_size].float()))
    return torch.cat(out) if out else x.new_zeros((0, 0)).float()


def fit_top(
    top: Top,
    head: nn.Linear,
    factors: torch.Tensor,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    recipe: TopRecipe,
    hooks: TrainingHooks,
    class_weights: torch.Tensor | None = None,
) -> list[dict[str, float]]:
    """Train ``top`` and ``head`` (which reads ``top``'s output times ``factors``) on activations.

    Every epoch ends with a log line as the head's (``Tuned epoch i/N Loss … Train Acc … Test Acc …``);
    the test split is only reported, never used to choose.

    Returns:
        One ``{epoch, loss, train_acc, test_acc}`` dict per epoch.
    """
    x_train, y_train = train
    scale = factors.detach().clone()
    groups = [
        {"params": [p for p in top.parameters()], "lr": recipe.lr * recipe.layer_lr_share},
        {"params": list(head.parameters()), "lr": recipe.lr},
    ]
    for param in (*top.parameters(), *head.parameters()):
        param.requires_grad = True
    optimizer = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    generator = torch.Generator().manual_seed(recipe.seed)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights)
    scaler = loss_scaler(str(x_train.device))
    history = []
    top.eval()  # BatchNorm keeps its statistics; the layers still train
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(len(y_train), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(order), recipe.batch_size):
            if hooks.should_stop():
                raise TrainingCancelled(f"cancelled in tuned epoch {epoch}")
            index = order[start : start + recipe.batch_size]
            with mixed_precision(str(x_train.device)):
                logits = head(top(x_train[index].float()) * scale)
                loss = loss_fn(logits.float(), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == y_train[index]).sum())
        test_acc = scaled_accuracy(top, head, scale, *test)
        row = {
            "epoch": epoch,
            "loss": round(loss_sum / len(y_train), 4),
            "train_acc": round(correct / len(y_train), 4),
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
    return history


def scaled_logits(top: Top, head: nn.Linear, factors: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not len(x):
        return torch.zeros((0, head.out_features))
    with torch.inference_mode():
        return head(top_outputs(top, x) * factors)


def scaled_accuracy(top: Top, head: nn.Linear, factors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    if not len(y):
        return 0.0
    return float((scaled_logits(top, head, factors, x).argmax(1) == y).float().mean())


# A model fine-tuned end to end (tune=full) is stored as a top over an empty trunk at this cut.
FULL_CUT = "full"


def whole_network(spec: BackboneSpec) -> CutPoint:
    """Every layer of the backbone as one top over an empty trunk: its first cut point's trunk and layers,
    in forward order."""
    first = spec.cut_points[0]
    return CutPoint(FULL_CUT, (), (*first.trunk, *first.layers))


def stored_cut(spec: BackboneSpec, name: str | None) -> CutPoint:
    """The cut point a stored tuned model names: one of the backbone's, or ``full``."""
    return whole_network(spec) if name == FULL_CUT and spec.cut_points else cut_point(spec, name)


def cut_point(spec: BackboneSpec, name: str | None) -> CutPoint:
    """The backbone's cut point ``name`` (its first when ``None``).

    Raises:
        ValueError: the backbone has no such cut point (the message names the valid ones).
    """
    if not spec.cut_points:
        raise ValueError(f"backbone {spec.name!r} has no cut points to tune from")
    if name is None:
        return spec.cut_points[0]
    for cut in spec.cut_points:
        if cut.name == name:
            return cut
    valid = ", ".join(cut.name for cut in spec.cut_points)
    raise ValueError(f"backbone {spec.name!r} has no cut point {name!r}; choose one of: {valid}")

"""The training recipe: every knob of head training, typed, frozen and with its default in one place.

A request is validated into a ``Recipe`` once (the API, the CLI and a stored job get the same checks),
a job row stores it as JSON, and the runner reads it back with ``Recipe.model_validate``. The ML core
takes it whole: ``fit_head``, cross-validation, backbone selection and ``train_classifier`` all read
the same object, so a new option is one field here plus the code that uses it.

Where a job runs (the runtime, loader workers, whether weights may be downloaded) is not part of the
recipe: that is ``Compute``, which the server fills from its settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from .runtime import RuntimeOptions

ClassWeighting = Literal["none", "balanced"]
FeatureDepth = Literal["final", "stages"]
Tune = Literal["head", "top", "full", "auto"]


class Recipe(BaseModel):
    """How a head is trained: SGD with momentum 0.9, batch 32, cross-entropy, as in the seed, but lr 0.01.

    The seed's lr 0.001 leaves a head trained for a handful of epochs under-fitted (five flower classes,
    20 photos each, 5 epochs: 58 % held-out accuracy against 69 % at 0.01); on cached features the
    extra steps a lower rate would need are cheap, but users ask for few epochs.

    ``augment_views`` is the number of randomly augmented copies of every training image whose features
    are extracted, on top of one plain (resize + centre crop) view. ``validation_fraction`` of the
    training split (per class) is held back only with ``early_stopping``: training then stops once the
    validation fold's loss has not improved for ``patience`` epochs, and the head of the best epoch is
    kept (never judged on the test split); the confidence temperature comes from cross-validation heads
    (out of fold).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(5, ge=1, le=200, description="Training epochs of the new head.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the split, augmentation and head init.")
    augment_views: int = Field(1, ge=0, le=16, description="Augmented views per training image.")
    early_stopping: bool = Field(
        False, description="Stop when the validation fold's loss stops improving (3 epochs) and keep the best epoch."
    )
    class_weighting: ClassWeighting = Field(
        "none", description="balanced: every class weighs the same in the loss, however many photos it has."
    )
    depth: FeatureDepth = Field(
        "stages",
        description="stages: the head reads the backbone's final features and the pooled outputs of the "
        "stages its registry entry names (one forward pass; better on photos unlike ImageNet); final: the "
        "final features only.",
    )
    tune: Tune = Field(
        "auto",
        description="head: only a new head trains on the frozen features; top: the backbone's last layers "
        "(its registry's cut point) train with a new head on cached activations of the frozen trunk below "
        "them; full: every layer and a new head train end to end on fresh augmentation every epoch (meant "
        "for CUDA; on the CPU many times slower, the log says how long first); auto: the head, then the "
        "top too unless the head's out-of-fold accuracy is 0.97 or more or "
        "the validation fold would hold fewer than 30 photos, keeping whichever scores better on a "
        "validation fold of the training photos.",
    )
    cut: str | None = Field(
        None,
        max_length=32,
        pattern=r"^[A-Za-z0-9_.]+$",
        description="Where the tuned top begins (efficientnet_lite: conv_head or blocks.6; resnet18: layer4); "
        "default: the backbone's first cut point.",
    )
    tune_epochs: int = Field(
        5, ge=1, le=100, description="Epochs of the tuned top (tune=top or auto) or of end-to-end training (tune=full)."
    )
    lr: float = Field(0.01, gt=0, le=10, description="Learning rate of the head's SGD.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum of the head's SGD.")
    batch_size: int = Field(32, ge=1, le=4096, description="Feature rows per SGD step.")
    patience: int = Field(3, ge=1, le=100, description="Epochs without a better validation loss before stopping.")
    validation_fraction: float = Field(
        0.15, gt=0, lt=1, description="Share of each class's training photos held back to stop early."
    )

    def with_values(self, **values: Any) -> Recipe:
        """A copy with ``values`` changed, validated like a new recipe."""
        return Recipe.model_validate({**self.model_dump(), **values})


def recipe_field(name: str, **overrides: Any) -> Any:
    """The recipe's field ``name`` (type bounds, default, description) for a request model to declare,
    with ``overrides`` (e.g. another default or description) on top: a request never restates a bound."""
    return FieldInfo.merge_field_infos(Recipe.model_fields[name], **overrides)


RECIPE_DEFAULTS = Recipe()


@dataclass(frozen=True)
class Compute:
    """Where and how a job computes, from the server's settings (never from a request).

    ``extract_batch_size`` views go through the backbone per forward pass; ``None`` is what the
    runtime runs fastest (``RuntimeOptions.batch_size``). ``pretrained=False`` is for tests only.
    """

    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    num_workers: int = 0
    allow_download: bool = False
    pretrained: bool = True
    extract_batch_size: int | None = None

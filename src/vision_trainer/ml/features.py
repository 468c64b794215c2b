"""Frozen-backbone feature extraction: every image goes through the backbone once per view."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import TrainingCancelled


def extract_features(
    extractor: nn.Module,
    dataset: Dataset[tuple[torch.Tensor, int]],
    *,
    device: str,
    batch_size: int = 32,
    num_workers: int = 0,
    on_batch: Callable[[int], None] = lambda n: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``extractor`` over ``dataset`` in batches.

    Args:
        extractor: A frozen backbone in eval mode whose output is the pooled feature vector.
        dataset: Yields ``(image tensor, label)``.
        device: Where to run the backbone.
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes decoding images while the backbone runs.
        on_batch: Called with the number of images of every finished batch.
        should_stop: Polled between batches.

    Returns:
        ``(features [N, F] float32 on device, labels [N] int64 on device)``.

    Raises:
        TrainingCancelled: ``should_stop()`` returned True.
    """
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.startswith("cuda"),
    )
    features, labels = [], []
    with torch.inference_mode():
        for images, targets in loader:
            if should_stop():
                raise TrainingCancelled("cancelled during feature extraction")
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            features.append(extractor(images).float())
            labels.append(targets.to(device))
            on_batch(len(targets))
    if not features:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels)

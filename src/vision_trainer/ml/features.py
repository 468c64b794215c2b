"""Frozen-backbone feature extraction: every image goes through the backbone once per view."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import TrainingCancelled
from .runtime import FeatureExtractor


def extract_features(
    extractor: FeatureExtractor,
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
        extractor: The frozen backbone (see ``runtime.build_extractor``).
        dataset: Yields ``(image tensor, label)``.
        device: Where the features and labels are gathered (and the head will train).
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
    for images, targets in loader:
        if should_stop():
            raise TrainingCancelled("cancelled during feature extraction")
        features.append(extractor(images).to(device).float())
        labels.append(targets.to(device))
        on_batch(len(targets))
    if not features:
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)
    # Features made under inference_mode can't be used in autograd; a clone makes them ordinary tensors.
    return torch.cat(features).clone(), torch.cat(labels)

"""Frozen-backbone feature extraction: every image goes through the backbone once per view."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import TrainingCancelled
from .runtime import FeatureExtractor

T = TypeVar("T")


def extract_features(
    extractor: FeatureExtractor,
    dataset: Dataset[tuple[torch.Tensor, int]],
    *,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    device: str,
    batch_size: int = 32,
    num_workers: int = 0,
    on_batch: Callable[[int], None] = lambda n: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``extractor`` over ``dataset`` in batches.

    Args:
        extractor: The frozen backbone (see ``runtime.build_extractor``).
        dataset: Yields ``(uint8 views [V, 3, S, S], label)`` (see ``data.ImageDataset``).
        normalize: Turns a uint8 batch into the backbone's float input.
        device: Where the features and labels are gathered (and the head will train).
        batch_size: Images per loader batch; each contributes all its views to one forward pass.
        num_workers: DataLoader worker processes decoding images; with 0, one thread of this process
            prepares the next batch while the backbone runs on the current one.
        on_batch: Called with the number of views of every finished batch.
        should_stop: Polled between batches.

    Returns:
        ``(features [N * V, F] float32 on device, labels [N * V] int64 on device)``, the views of
        one image next to each other.

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
    for images, targets in loader if num_workers else prefetched(loader):
        if should_stop():
            raise TrainingCancelled("cancelled during feature extraction")
        views = images.shape[1]
        flat = normalize(images.flatten(0, 1))
        features.append(extractor(flat).to(device).float())
        labels.append(targets.repeat_interleave(views).to(device))
        on_batch(len(flat))
    if not features:
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)
    # Features made under inference_mode can't be used in autograd; a clone makes them ordinary tensors.
    return torch.cat(features).clone(), torch.cat(labels)


def prefetched(batches: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``batches`` in a background thread, ``depth`` items ahead.

    Decoding and resizing in Pillow and the backbone's forward pass both release the GIL, so the
    next batch is prepared while the current one runs, without the start-up cost of worker processes.
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                if stop.is_set():
                    return
                items.put(("item", item))
            items.put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            items.put(("error", exc))

    thread = threading.Thread(target=produce, name="vt-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.05)

"""Frozen-backbone feature extraction: every image goes through the backbone once per view, and with a
feature cache once per view ever (the same pixels through the same weights give the same features)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data import ImageDataset, LabelledImage
from .errors import TrainingCancelled
from .runtime import FeatureExtractor

T = TypeVar("T")
log = logging.getLogger(__name__)


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
    # Normalized here, between forward passes: done in the prefetch thread it overlapped with the
    # backbone and slowed it by more than it saved (measured: 0.4 s more per 700 views on 2 cores).
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


class FeatureCache(Protocol):
    """Where features computed once per (image content, backbone weights, view) are kept."""

    def get(self, key: str) -> np.ndarray | None:
        """The stored vector, or None when it is not there (or not readable)."""

    def put(self, key: str, value: np.ndarray) -> None:
        """Store a vector; readers never see a half-written one."""


@dataclass(frozen=True)
class ViewSet:
    """The views of every image: the plain one, then ``augmented`` seeded random ones."""

    plain: Callable[[Any], torch.Tensor]
    augment: Callable[[Any], torch.Tensor]
    augmented: int
    seed: int

    def keys(self) -> list[str]:
        return ["plain"] + [f"aug{k}.s{self.seed}" for k in range(1, self.augmented + 1)]

    def pick(self, indices: Sequence[int]) -> tuple[list[Callable[[Any], torch.Tensor]], list[int | None]]:
        """The transforms and view numbers (None = plain) of the views at ``indices``."""
        return ([self.plain if i == 0 else self.augment for i in indices], [None if i == 0 else i for i in indices])


@dataclass
class CachedExtraction:
    """Features of a set of images from the cache where it has them, computed (and stored) where not.

    What ``features`` computes goes to the cache from a writer thread: call ``flush`` before the job ends.
    """

    cache: FeatureCache | None
    fingerprint: str
    extractor: Callable[[], FeatureExtractor]
    draft_size: int
    normalize: Callable[[torch.Tensor], torch.Tensor]
    device: str
    batch_size: int  # views per forward pass (whole images: 6 for 3 views of batch 8)
    num_workers: int = 0
    on_batch: Callable[[int], None] = lambda n: None
    should_stop: Callable[[], bool] = lambda: False
    # float16 for a tuned top's activations (kept so in memory too); features are float32
    dtype: str = "float32"
    computed: int = 0
    reused: int = 0
    _looked_up: dict[str, np.ndarray] = field(default_factory=dict)
    _unwritten: list[tuple[str, np.ndarray]] = field(default_factory=list)
    _writer: ThreadPoolExecutor | None = None
    _writes: list[Future[None]] = field(default_factory=list)

    def key(self, sha256: str, view: str) -> str:
        return f"{self.fingerprint}/{sha256}/{view}"

    def missing(self, items: Sequence[LabelledImage], views: ViewSet) -> int:
        """How many (image, view) features are not cached: what ``features`` will compute. What is found
        is kept for ``features``, so every cached vector is read once."""
        return sum(self._get(self.key(item.sha256, k)) is None for item in items for k in views.keys())

    def _get(self, key: str) -> np.ndarray | None:
        if key in self._looked_up:
            return self._looked_up.pop(key)
        if self.cache is None:
            return None
        value = self.cache.get(key)
        if value is not None:
            self._looked_up[key] = value
        return value

    def features(self, items: Sequence[LabelledImage], views: ViewSet) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [N * V, F], labels [N * V])`` on ``device``, the views of one image side by side."""
        keys = views.keys()
        found = [[self._get(self.key(item.sha256, k)) for k in keys] for item in items]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, row in enumerate(found):
            todo = tuple(v for v, value in enumerate(row) if value is None)
            if todo:
                groups.setdefault(todo, []).append(index)
        for todo, indices in groups.items():
            self._compute([items[i] for i in indices], views, todo, [found[i] for i in indices])
        self.write_behind()
        total = len(items) * len(keys)
        self.reused += total - sum(len(t) * len(i) for t, i in groups.items())
        if not items:
            return torch.empty(0, device=self.device), torch.empty(0, dtype=torch.long, device=self.device)
        stacked = torch.from_numpy(np.stack([value for row in found for value in row]).astype(self.dtype, copy=False))  # type: ignore[misc]
        labels = torch.tensor([item.label for item in items]).repeat_interleave(len(keys))
        return stacked.to(self.device), labels.to(self.device)

    def _compute(
        self, items: list[LabelledImage], views: ViewSet, todo: tuple[int, ...], rows: list[list[np.ndarray | None]]
    ) -> None:
        transforms, numbers = views.pick(todo)
        dataset = ImageDataset(items, transforms, draft_size=self.draft_size, view_numbers=numbers, seed=views.seed)
        per_pass = max(1, self.batch_size // len(todo))
        x, _ = extract_features(
            self.extractor(),
            dataset,
            normalize=self.normalize,
            device="cpu",
            batch_size=per_pass,
            num_workers=self.num_workers,
            on_batch=self.on_batch,
            should_stop=self.should_stop,
        )
        values = x.reshape(len(items), len(todo), -1).numpy().astype(self.dtype, copy=False)
        keys = views.keys()
        entries = []
        for item, row, computed in zip(items, rows, values):
            for slot, vector in zip(todo, computed):
                row[slot] = vector
                entries.append((self.key(item.sha256, keys[slot]), vector))
        self.computed += len(items) * len(todo)
        if self.cache is not None:
            self._unwritten.extend(entries)

    def write_behind(self) -> None:
        """Start putting the computed features in the cache from a thread of its own, which overlaps the
        next set's extraction (the backbone runs without the GIL). Started while the head trained instead,
        its file calls and the head's small steps took turns with the GIL and the head took twice as
        long. ``flush`` waits for them."""
        if self.cache is None or not self._unwritten:
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="vt-feature-cache")
        cache, entries, self._unwritten = self.cache, self._unwritten, []

        def write() -> None:
            for key, value in entries:
                try:
                    cache.put(key, value)
                except Exception:  # the cache is only a shortcut: never the job's failure
                    log.warning("feature cache: storing %s failed", key, exc_info=True)

        self._writes.append(self._writer.submit(write))

    def flush(self) -> None:
        """Put every computed feature in the cache and wait until it is there."""
        self.write_behind()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()

"""The in-memory caches a process keeps for its use cases: loaded models and the last storage measurement.

A leaf module (nothing of ``services`` imported), so that ``context.Services`` can hold the caches
while the use cases that fill them import ``context``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..ml.predictor import Predictor

log = logging.getLogger(__name__)

CACHE_S = 2.0  # a storage measurement older than this is answered while a new one runs


class PredictorCache:
    """At most ``size`` loaded models, least recently used dropped first. Thread-safe; a model is
    loaded once even when many requests for it arrive together."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, key: str, load: Callable[[], Predictor]) -> Predictor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            predictor = load()
            with self._lock:
                self._items[key] = predictor
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
            return predictor

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class UsageCache:
    """The latest measurement. Older than ``CACHE_S`` seconds it is still answered while a thread of its
    own measures again, so no request waits for a directory walk (a data dir with a feature cache holds
    thousands of files; GET / is polled by dashboards while jobs train). Only the first read, and the
    first after ``forget()`` (something was stored or deleted), measures while the caller waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._at = 0.0
        self._generation = 0  # bumped by forget(): a walk that began before it is not kept
        self._refreshing = False

    def get(self, measure: Callable[[], dict[str, Any]], *, fresh: bool = False) -> dict[str, Any]:
        """The last measurement (see the class); with ``fresh``, one at most ``CACHE_S`` old, measured now
        if need be (what an upload is checked against)."""
        with self._lock:  # one walk at a time; callers arriving meanwhile take its answer
            if self._value is None or (fresh and time.monotonic() - self._at > CACHE_S):
                self._value, self._at = measure(), time.monotonic()
                self._generation += 1  # a walk in the background began before this one
            return self._answer(measure)

    def last(self, measure: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """As ``get``, but None instead of measuring, or of waiting for a walk that holds the lock (the
        caller may be the event loop)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return None if self._value is None else self._answer(measure)
        finally:
            self._lock.release()

    def _answer(self, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        assert self._value is not None
        if time.monotonic() - self._at > CACHE_S and not self._refreshing:
            self._refreshing = True
            threading.Thread(
                target=self._refresh, args=(measure, self._generation), name="vt-storage-usage", daemon=True
            ).start()
        return dict(self._value)

    def _refresh(self, measure: Callable[[], dict[str, Any]], generation: int) -> None:
        try:
            value = measure()
        except Exception as exc:  # the database is away for a moment: the next read tries again
            log.warning("measuring the stored data failed (%s); answering the last figures", exc)
            value = None
        with self._lock:
            self._refreshing = False
            if value is not None and generation == self._generation:
                self._value, self._at = value, time.monotonic()

    def forget(self) -> None:
        with self._lock:
            self._value = None
            self._generation += 1

"""What the stored data takes (images, models, feature cache, exported backbones, database) and the
``VT_MAX_DATA_MB`` bound that new uploads are checked against before anything of them is stored."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store.usage import database_bytes, sqlite_files, tree_bytes
from .errors import InsufficientStorage
from .uploads import Upload

if TYPE_CHECKING:
    from .context import Services

log = logging.getLogger(__name__)

CACHE_S = 2.0
MiB = 2**20
# Top-level folders of the data dir and what they hold (see store.files.DataDir).
_PARTS = {"datasets": "images", "jobs": "images", "models": "models", "features": "feature_cache"}


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


def storage_usage(services: Services) -> dict[str, Any]:
    """Bytes taken by each kind of stored data, their total, the limit and the free space.

    Returns:
        ``{images_bytes, models_bytes, feature_cache_bytes, backbones_bytes, database_bytes, other_bytes,
        total_bytes, limit_bytes, free_bytes}``: images are datasets' photos and v1 jobs' uploads;
        backbones the exported ONNX backbones (VT_CACHE_DIR); other is anything else in the data dir
        (files being assembled in ``tmp/``); ``limit_bytes`` is VT_MAX_DATA_MB (None: no limit) and
        ``free_bytes`` the free space of the data dir's file system. Measured at most every few seconds
        (see ``UsageCache``).
    """
    return services.usage.get(lambda: _measure(services))


def last_storage_usage(services: Services) -> dict[str, Any] | None:
    """``storage_usage`` when it needs no walk while the caller waits (None when it would)."""
    return services.usage.last(lambda: _measure(services))


def forget_usage(services: Services) -> None:
    """Measure afresh next time (after something was stored or deleted)."""
    services.usage.forget()


def check_room(services: Services, incoming_bytes: int | None = None) -> None:
    """Refuse a new upload when the stored data is already over VT_MAX_DATA_MB, or ``incoming_bytes``
    (the upload's declared size) would take it over. Nothing to do without a limit.

    Raises:
        InsufficientStorage: over the limit (``storage_full``), saying what to delete or raise.
    """
    limit = services.settings.max_data_bytes
    if limit is None:
        return
    used = services.usage.get(lambda: _measure(services), fresh=True)["total_bytes"]
    incoming = max(incoming_bytes or 0, 0)
    if used <= limit and used + incoming <= limit:
        return
    upload = f" and this upload is {incoming / MiB:.1f} MiB" if used <= limit else ""
    raise InsufficientStorage(
        f"the data dir holds {used / MiB:.1f} MiB of {services.settings.max_data_mb:g} MiB (VT_MAX_DATA_MB){upload}: "
        "delete datasets, models or jobs, or raise the limit",
        code="storage_full",
    )


def upload_bytes(uploads: Iterable[Upload | None]) -> int:
    """The sizes of uploads still to be stored (streams that cannot tell their size count as 0)."""
    total = 0
    for upload in uploads:
        if upload is None:
            continue
        stream = upload.stream
        try:
            here = stream.tell()
            total += stream.seek(0, os.SEEK_END) - here
            stream.seek(here)
        except (AttributeError, OSError, ValueError):
            continue
    return total


def _measure(services: Services) -> dict[str, Any]:
    root = services.files.root
    backbones = services.settings.resolved_cache_dir.resolve()
    database = set(sqlite_files(services.db))
    parts = dict.fromkeys(("images", "models", "feature_cache", "other"), 0)
    for entry in _top_level(root):
        if entry in database or entry == backbones:
            continue
        skip = backbones if root in backbones.parents else None
        parts[_PARTS.get(entry.name, "other")] += tree_bytes(entry, skip=skip)
    usage: dict[str, Any] = {f"{name}_bytes": size for name, size in parts.items()}
    usage["backbones_bytes"] = tree_bytes(backbones)
    usage["database_bytes"] = database_bytes(services.db)
    usage["total_bytes"] = sum(usage.values())
    usage["limit_bytes"] = services.settings.max_data_bytes
    usage["free_bytes"] = shutil.disk_usage(root).free
    return usage


def _top_level(root: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(root)]
    except FileNotFoundError:
        return []

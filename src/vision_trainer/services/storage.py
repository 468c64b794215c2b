"""What the stored data takes (images, models, feature cache, exported backbones, database) and the
``VT_MAX_DATA_MB`` bound that new uploads are checked against before anything of them is stored."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store.usage import database_bytes, sqlite_files, tree_bytes
from .errors import InsufficientStorage
from .uploads import Upload

if TYPE_CHECKING:
    from .context import Services

log = logging.getLogger(__name__)

MiB = 2**20
# Top-level folders of the data dir and what they hold (see store.files.DataDir).
_PARTS = {"datasets": "images", "jobs": "images", "models": "models", "features": "feature_cache"}


def storage_usage(services: Services) -> dict[str, Any]:
    """Bytes taken by each kind of stored data, their total, the limit and the free space.

    Returns:
        ``{images_bytes, models_bytes, feature_cache_bytes, backbones_bytes, database_bytes, other_bytes,
        total_bytes, limit_bytes, free_bytes}``: images are datasets' photos and v1 jobs' uploads;
        backbones the exported ONNX backbones (VT_CACHE_DIR); other is anything else in the data dir
        (files being assembled in ``tmp/``); ``limit_bytes`` is VT_MAX_DATA_MB (None: no limit) and
        ``free_bytes`` the free space of the data dir's file system. Measured at most every few seconds
        (see ``caches.UsageCache``).
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

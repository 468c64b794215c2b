"""The feature cache on disk: one small ``.npy`` file per (backbone fingerprint, image content, view).

Written through a temporary file and a rename, so any number of threads and worker processes can
fill it at once and no reader ever sees half a vector. Bounded: when it grows past its size, the least
recently used files go first (a read refreshes a file's modification time).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_KEY = re.compile(r"^([A-Za-z0-9_.-]{1,120})/([0-9a-f]{64})/([A-Za-z0-9_.-]{1,40})$")
EVICT_CHECK_BYTES = 8 << 20  # look at the total again after this much has been written
EVICT_TO = 0.9  # evict down to this fraction of the bound


class FeatureFileCache:
    """``get``/``put`` by key ``"<fingerprint>/<sha256>/<view>"`` (see ``ml.features.FeatureCache``)."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._written = 0
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        match = _KEY.match(key)
        if match is None or match.group(1).startswith("."):
            raise ValueError(f"not a feature cache key: {key!r}")
        fingerprint, sha, view = match.groups()
        return self.root / fingerprint / sha[:2] / f"{sha}.{view}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        try:
            value = np.load(path, allow_pickle=False)
            os.utime(path)  # recently used
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # unreadable: compute it again
            log.warning("feature cache entry %s unreadable (%s); recomputing it", path, exc)
            path.unlink(missing_ok=True)
            return None
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(value, dtype=np.float32), allow_pickle=False)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # a full disk must not fail training: the cache is only a shortcut
            log.warning("could not store features in %s: %s", path.parent, exc)
            return
        with self._lock:
            self._written += value.nbytes + 128
            due = self._written >= EVICT_CHECK_BYTES
            if due:
                self._written = 0
        if due:
            self.evict()

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> int:
        """Remove the least recently used entries until the cache is under its bound; how many went."""
        entries = list(self._entries())
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return 0
        removed = 0
        for path, size, _ in sorted(entries, key=lambda entry: entry[2]):
            if total <= self.max_bytes * EVICT_TO:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        log.info("feature cache: evicted %d least recently used entries", removed)
        return removed

    def _entries(self) -> list[tuple[Path, int, float]]:
        found = []
        stale_before = time.time() - 3600
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if name.startswith(".tmp-"):
                    if stat.st_mtime < stale_before:  # left by a killed writer
                        path.unlink(missing_ok=True)
                    continue
                found.append((path, stat.st_size, stat.st_mtime))
        return found

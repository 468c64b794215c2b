"""The feature cache on disk: one small ``.npy`` file per (backbone fingerprint, image content, view).

Written through a temporary file and a rename, so any number of threads and worker processes can
fill it at once and no reader ever sees half a vector. Bounded: when it grows past its size, the least
recently used files go first (a read refreshes a file's modification time).
"""

from __future__ import annotations

import errno
import functools
import io
import itertools
import logging
import os
import re
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_KEY = re.compile(r"^([A-Za-z0-9_.-]{1,120})/([0-9a-f]{64})/([A-Za-z0-9_.-]{1,40})$")
EVICT_CHECK_BYTES = 8 << 20  # look at the total again after this much has been written
EVICT_TO = 0.9  # evict down to this fraction of the bound


# Features are float32; a tuned top's cached activations (ml.tuning) are float16, half the disk.
DTYPES = {"<f4": 4, "<f2": 2}


@functools.cache
def _npy_header(count: int, descr: str = "<f4") -> bytes:
    """The ``.npy`` header of a vector of ``count`` values of ``descr``, as ``np.save`` writes it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": (count,)})
    return buffer.getvalue()


def _read(path: Path) -> np.ndarray:
    """An entry's vector, exactly as ``put`` writes it: one read and a header comparison (``np.load``
    parsed the header of every file, twice the time).

    Raises:
        ValueError: anything else (empty, truncated, extended, another dtype or shape): ``get`` then
            drops the file and the vector is computed again.
    """
    with open(path, "rb", buffering=0) as file:
        data = file.read()
    if data[:8] == b"\x93NUMPY\x01\x00" and len(data) >= 10:
        start = 10 + int.from_bytes(data[8:10], "little")
        for descr, size in DTYPES.items():
            count, rest = divmod(len(data) - start, size)
            if not rest and count > 0 and data[:start] == _npy_header(count, descr):
                return np.frombuffer(data, dtype=descr, offset=start).copy()
    raise ValueError(f"not a float32 or float16 vector as the cache writes it ({len(data)} bytes)")


class FeatureFileCache:
    """``get``/``put`` by key ``"<fingerprint>/<sha256>/<view>"`` (see ``ml.features.FeatureCache``)."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._written = 0
        self._lock = threading.Lock()
        self._serial = itertools.count()

    def path(self, key: str) -> Path:
        match = _KEY.match(key)
        if match is None or match.group(1).startswith("."):
            raise ValueError(f"not a feature cache key: {key!r}")
        fingerprint, sha, view = match.groups()
        return self.root / fingerprint / sha[:2] / f"{sha}.{view}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        try:
            value = _read(path)
            os.utime(path)  # recently used
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:  # unreadable: compute it again
            log.warning("feature cache entry %s unreadable (%s); recomputing it", path, exc)
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            return None
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        """Store a vector (1-D: what ``get`` reads back; float16 stays float16, anything else is float32)."""
        if value.ndim != 1 or not len(value):
            raise ValueError(f"the feature cache stores vectors, not arrays of shape {value.shape}")
        path = self.path(key)
        try:
            try:
                self._write(path, value)
            except FileNotFoundError:  # its folder is new, or went since (the cache was cleared)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._write(path, value)
        except OSError as exc:  # a full disk must not fail training: the cache is only a shortcut
            log.warning("could not store features in %s: %s", path.parent, exc)
            return
        with self._lock:
            self._written += value.nbytes + 128
            due = self._written >= EVICT_CHECK_BYTES
            if due:
                self._written = 0
        if due:
            try:
                self.evict()
            except OSError as exc:  # as a failed write: the cache is only a shortcut
                log.warning("feature cache: evicting old entries failed: %s", exc)

    def _write(self, path: Path, value: np.ndarray) -> None:
        # A temporary name unique to this process and thread (cheaper than mkstemp's random tries), and the
        # .npy bytes written by os calls, which release the GIL: the head trains meanwhile in Python.
        descr = "<f2" if value.dtype == np.float16 else "<f4"
        vector = np.ascontiguousarray(value, dtype=descr)  # what the header says
        tmp = f"{path.parent}/.tmp-{os.getpid()}-{threading.get_ident()}-{next(self._serial)}.npy"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                data = _npy_header(len(vector), descr) + vector.tobytes()
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, "short write")
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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

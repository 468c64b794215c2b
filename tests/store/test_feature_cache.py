"""The feature cache on disk: what is put is what is read, no temporary file stays, a cleared cache
fills again, and a write that fails costs the job nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vision_trainer.store.feature_cache import FeatureFileCache

SHA = "ab" * 32


def key(view: str = "plain", sha: str = SHA) -> str:
    return f"lite0-onnx-cpu/{sha}/{view}"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_then_get_returns_the_vector_as_np_load_reads_it(tmp_path: Path) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    vector = np.random.default_rng(0).standard_normal(1280).astype(np.float32)
    cache.put(key(), vector)
    assert np.array_equal(cache.get(key()), vector)
    (stored,) = files_under(tmp_path)
    assert stored == f"lite0-onnx-cpu/ab/{SHA}.plain.npy"
    assert np.array_equal(np.load(tmp_path / stored), vector)  # a plain .npy file
    assert cache.get(key("aug1.s0")) is None


def test_an_entry_written_by_np_save_is_read_and_the_vector_is_writable(tmp_path: Path) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    vector = np.arange(7, dtype=np.float32)
    cache.put(key(), np.zeros(7, dtype=np.float32))
    np.save(cache.path(key()), vector)  # the same bytes np.save writes
    value = cache.get(key())
    assert np.array_equal(value, vector) and value.dtype == np.float32 and value.flags.writeable


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data[:-4], id="truncated"),
        pytest.param(lambda data: data[:40], id="header cut"),
        pytest.param(lambda data: data + b"\0\0\0\0", id="extended"),
        pytest.param(lambda data: b"not a numpy file at all", id="foreign"),
    ],
)
def test_a_damaged_entry_is_dropped_and_computed_again(tmp_path: Path, damage, caplog) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    cache.put(key(), np.ones(16, dtype=np.float32))
    path = cache.path(key())
    path.write_bytes(damage(path.read_bytes()))
    assert cache.get(key()) is None
    assert not path.exists() and "unreadable" in caplog.text
    cache.put(key(), np.ones(16, dtype=np.float32))  # what the job does next
    assert np.array_equal(cache.get(key()), np.ones(16, dtype=np.float32))


@pytest.mark.parametrize(
    "array", [np.ones(16, dtype=np.float64), np.ones((4, 4), dtype=np.float32)], ids=["float64", "2-D"]
)
def test_an_entry_of_another_dtype_or_shape_is_not_taken_for_a_vector(tmp_path: Path, array: np.ndarray) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    cache.put(key(), np.ones(16, dtype=np.float32))
    np.save(cache.path(key()), array)
    assert cache.get(key()) is None and not cache.path(key()).exists()


def test_a_cleared_cache_fills_again_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    cache.put(key(), np.ones(8, dtype=np.float32))
    for child in tmp_path.iterdir():  # what "delete the feature cache" does
        for path in sorted(child.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        child.rmdir()
    cache.put(key("aug1.s0"), np.full(8, 2, dtype=np.float32))
    assert np.array_equal(cache.get(key("aug1.s0")), np.full(8, 2, dtype=np.float32))
    assert not [name for name in files_under(tmp_path) if ".tmp-" in name]


def test_a_failed_write_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    (tmp_path / "lite0-onnx-cpu").mkdir()
    (tmp_path / "lite0-onnx-cpu" / "cd").write_bytes(b"")  # a file where the entry's folder would go
    cache.put(key(sha="cd" * 32), np.ones(8, dtype=np.float32))
    assert "could not store features" in caplog.text
    assert files_under(tmp_path) == ["lite0-onnx-cpu/cd"]
    assert cache.get(key(sha="cd" * 32)) is None


def test_a_write_that_fails_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    cache.put(key(), np.ones(8, dtype=np.float32))

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    cache.put(key("aug1.s0"), np.ones(8, dtype=np.float32))  # logged, not raised
    monkeypatch.undo()
    assert files_under(tmp_path) == [f"lite0-onnx-cpu/ab/{SHA}.plain.npy"]
    assert cache.get(key("aug1.s0")) is None


def test_only_vectors_are_stored(tmp_path: Path) -> None:
    cache = FeatureFileCache(tmp_path, max_bytes=1 << 20)
    for array in (np.ones((4, 4), dtype=np.float32), np.zeros(0, dtype=np.float32)):
        with pytest.raises(ValueError, match="stores vectors"):
            cache.put(key(), array)
    assert files_under(tmp_path) == []

"""Artifact files under the data dir. Every path is built from generated ids and checked to stay inside."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

_ID = re.compile(r"^[0-9a-f]{32}$")


class PathOutsideDataDir(ValueError):
    """A computed path would leave the data dir."""


class DataDir:
    """Layout: ``datasets/<dataset_id>/<image_id>.img``, ``models/<model_id>/head.pth`` (or a v1
    model's full ``trained_model.pth``), ``features/`` (the feature cache), ``jobs/<job_id>/`` (uploads
    of v1 jobs), ``tmp/`` (files being assembled)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def ensure(self) -> None:
        for sub in ("jobs", "models", "datasets", "features", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def inside(self, *parts: str) -> Path:
        """``root/parts...``, refusing anything that would resolve outside the data dir."""
        path = self.root.joinpath(*parts).resolve()
        if path != self.root and self.root not in path.parents:
            raise PathOutsideDataDir(f"{path} is outside the data dir {self.root}")
        return path

    def job_dir(self, job_id: str) -> Path:
        return self.inside("jobs", _checked_id(job_id))

    def model_dir(self, model_id: str) -> Path:
        return self.inside("models", _checked_id(model_id))

    def checkpoint_path(self, model_id: str) -> Path:
        """A v1 model's full checkpoint (and an imported model's)."""
        return self.model_dir(model_id) / "trained_model.pth"

    def head_path(self, model_id: str) -> Path:
        """A v2 model's head: the backbone's weights are shared, not copied per model."""
        return self.model_dir(model_id) / "head.pth"

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.inside("datasets", _checked_id(dataset_id))

    def dataset_image(self, dataset_id: str, image_id: str) -> Path:
        return self.dataset_images(dataset_id, [image_id])[0]

    def dataset_images(self, dataset_id: str, image_ids: Sequence[str]) -> list[Path]:
        """The files of a dataset's images, its folder resolved once (a job's 400 photos: 0.03 s less)."""
        folder = self.dataset_dir(dataset_id)
        return [folder / f"{_checked_id(image_id)}.img" for image_id in image_ids]

    def dataset_staging(self, dataset_id: str) -> Path:
        """A fresh private folder beside a dataset's images to check an upload in."""
        parent = self.inside("datasets")
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".add-{_checked_id(dataset_id)}-", dir=parent))

    @property
    def features_dir(self) -> Path:
        return self.inside("features")

    def temp_file(self, suffix: str) -> Path:
        """A new empty file under ``tmp/`` (same file system as the data, so renames are atomic)."""
        folder = self.inside("tmp")
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=suffix, dir=folder)
        os.close(fd)
        return Path(name)

    def staging_dir(self) -> Path:
        """A fresh private folder under ``jobs/`` to write an upload into before it becomes a job."""
        return Path(tempfile.mkdtemp(prefix=".upload-", dir=self.inside("jobs")))

    def is_writable(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)


def _checked_id(value: str) -> str:
    if not _ID.match(value):
        raise PathOutsideDataDir(f"not an id: {value!r}")
    return value


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

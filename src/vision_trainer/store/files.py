"""Artifact files under the data dir. Every path is built from generated ids and checked to stay inside."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_ID = re.compile(r"^[0-9a-f]{32}$")


class PathOutsideDataDir(ValueError):
    """A computed path would leave the data dir."""


class DataDir:
    """Layout: ``jobs/<job_id>/<class>/<file>``, ``models/<model_id>/trained_model.pth``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def ensure(self) -> None:
        for sub in ("jobs", "models"):
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
        return self.model_dir(model_id) / "trained_model.pth"

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

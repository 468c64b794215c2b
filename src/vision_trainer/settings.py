"""Service settings: one pydantic-settings class, read from ``VT_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service. Each field maps to ``VT_<NAME>`` (see the README)."""

    model_config = SettingsConfigDict(env_prefix="VT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Where the database, uploads and models live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file vision_trainer.db in the data dir."
    )
    default_backbone: Literal["resnet18", "efficientnet_lite0"] = Field(
        "resnet18",
        description="Backbone used when a request names none; falls back to efficientnet_lite0 "
        "(announced) when its pretrained weights are not available.",
    )
    download_weights: bool = Field(
        False,
        description="Let torchvision download ResNet-18's ImageNet weights into the torch hub cache "
        "when they are not there yet (needs network access).",
    )
    device: str = Field("auto", description="'auto' (cuda:0 when available, else cpu), 'cpu' or 'cuda:N'.")
    runtime: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="Backbone runtime: 'auto' = ONNX Runtime on the CPU (PyTorch on CUDA), or force one.",
    )
    cache_dir: Path | None = Field(None, description="Exported ONNX backbones; default: <data dir>/cache.")
    max_concurrent_jobs: int = Field(1, ge=1, le=64, description="Training jobs run at once by the local runner.")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes for image decoding.")
    augment_views: int = Field(
        1, ge=0, le=16, description="Augmented views per training image whose features are extracted."
    )
    max_classes: int = Field(100, ge=2, le=1000, description="Most classes one training request may have.")
    max_batch_files: int = Field(256, ge=1, le=10_000, description="Most files in one POST /predict/batch.")
    model_cache_size: int = Field(4, ge=1, le=128, description="Trained models kept in memory for /predict.")
    host: str = Field("127.0.0.1", description="Address `vision-trainer serve` / `make run` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `vision-trainer serve` / `make run` binds.")
    log_level: str = Field("info", description="Log level of the server.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value == "auto" or value == "cpu" or value.startswith("cuda"):
            return value
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {value!r}")

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vision_trainer.db').resolve()}"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    def resolved_device(self) -> str:
        """The torch device string to train and predict on."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def cpu_count() -> int:
    """Usable CPU cores of this process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1

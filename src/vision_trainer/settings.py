"""Service settings: one pydantic-settings class, read from ``VT_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .ml.recipe import recipe_field


class Settings(BaseSettings):
    """Every knob of the service. Each field maps to ``VT_<NAME>`` (see the README)."""

    model_config = SettingsConfigDict(env_prefix="VT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Where the database, uploads and models live.")
    database_url: str | None = Field(
        None,
        description="Database URL: default a SQLite file vision_trainer.db in the data dir; "
        "postgresql://user:password@host:port/db for PostgreSQL (driver: psycopg 3).",
    )
    job_backend: Literal["local", "celery"] = Field(
        "local",
        description="Who trains: 'local' = threads of the server process; 'celery' = `vision-trainer worker` "
        "processes fed through VT_BROKER_URL.",
    )
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (Redis) when VT_JOB_BACKEND=celery.")
    heartbeat_interval_s: float = Field(
        5, gt=0, le=3600, description="How often a training worker stamps its job's heartbeat time."
    )
    heartbeat_timeout_s: float = Field(
        60,
        gt=0,
        le=86_400,
        description="A running job whose heartbeat is older than this is taken for dead and re-queued (Celery).",
    )
    sweep_interval_s: float = Field(
        10, gt=0, le=3600, description="How often the API and the workers look for jobs with a stale heartbeat."
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="A job whose worker died this many times is marked failed instead of re-run."
    )
    max_job_hours: float = Field(
        12,
        gt=0,
        le=24 * 30,
        description="Longest a job may train; the Redis visibility timeout is set above it so the broker "
        "never hands a running job to a second worker.",
    )
    database_retry_s: float = Field(
        300,
        ge=0,
        le=86_400,
        description="How long a running job keeps retrying (with backoff) while the database cannot be reached, "
        "before it gives up; meanwhile the API answers 503 database_unavailable.",
    )
    default_backbone: Literal["resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = Field(
        "resnet18",
        description="Backbone used when a request names none; falls back to efficientnet_lite0 "
        "(announced) when its pretrained weights are not available.",
    )
    download_weights: bool = Field(
        True,
        description="Download ResNet-18's ImageNet weights into the torch hub cache on first use when "
        "they are not there yet, as torchvision does; offline the attempt fails within seconds (and is "
        "not repeated for 5 minutes) and the default backbone falls back to efficientnet_lite0, saying so.",
    )
    device: str = Field("auto", description="'auto' (cuda:0 when available, else cpu), 'cpu' or 'cuda:N'.")
    runtime: Literal["auto", "onnx", "openvino", "openvino-bf16", "torch"] = Field(
        "auto",
        description="Backbone runtime for prediction and feature extraction: 'auto' = the fastest installed one "
        "on the CPU that keeps accuracy (ml.runtime.AUTO_ORDER; PyTorch on CUDA), or one by name: 'onnx' (ONNX "
        "Runtime), 'openvino' (OpenVINO float32), 'openvino-bf16' (OpenVINO bfloat16, CPUs with AVX-512 BF16 or "
        "AMX), 'torch'.",
    )
    cache_dir: Path | None = Field(None, description="Exported ONNX backbones; default: <data dir>/cache.")
    max_concurrent_jobs: int = Field(1, ge=1, le=64, description="Training jobs run at once by the local runner.")
    num_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="DataLoader worker processes for image decoding; 0 = one prefetch thread (faster on 2 cores).",
    )
    augment_views: int = recipe_field(
        "augment_views", description="Augmented views per training image whose features are extracted."
    )
    max_classes: int = Field(100, ge=2, le=1000, description="Most classes one training request may have.")
    max_batch_files: int = Field(256, ge=1, le=10_000, description="Most files in one POST /predict/batch.")
    model_cache_size: int = Field(4, ge=1, le=128, description="Trained models kept in memory for /predict.")
    reject_novel: bool = Field(
        False,
        description='Answer "unknown" for photos unlike every training photo (novel) when a /predict request '
        "does not say (its reject_novel field).",
    )
    feature_cache_mb: float = Field(
        2048,
        gt=0,
        le=10_485_760,
        description="Bound of the feature cache (<data dir>/features), in MiB; least recently used entries go first.",
    )
    max_data_mb: float | None = Field(
        None,
        gt=0,
        le=1_073_741_824,
        description="Bound of the stored data (images, models, feature cache, exported backbones, database: the "
        "total of GET /storage), in MiB; over it new uploads are refused with 507 storage_full. Default: no limit.",
    )
    max_archive_entries: int = Field(
        20_000, ge=1, le=1_000_000, description="Most entries (files, folders, links) in one uploaded archive."
    )
    max_archive_mb: float = Field(
        4096, gt=0, le=1_048_576, description="Largest total uncompressed size of one uploaded archive, in MiB."
    )
    max_archive_ratio: float = Field(
        100,
        gt=1,
        le=100_000,
        description="Largest ratio of uncompressed to compressed size of an archive (photos barely compress; "
        "a zip bomb compresses a thousandfold).",
    )
    max_file_mb: float = Field(
        64,
        gt=0,
        le=10_240,
        description="Largest uploaded file, in MiB (images and checkpoints; a ResNet-18 checkpoint is 45 MiB).",
    )
    max_files: int = Field(10_000, ge=1, le=1_000_000, description="Most files in one request.")
    max_request_mb: float = Field(
        2048, gt=0, le=1_048_576, description="Largest request body, in MiB; refused with 413 while it streams."
    )
    max_fields: int = Field(1_000, ge=10, le=100_000, description="Most non-file form fields in one request.")
    max_field_kb: int = Field(64, ge=1, le=1_048_576, description="Largest non-file form field, in KiB.")
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Images with more pixels are refused before they are decoded."
    )
    max_request_pixels: int = Field(
        200_000_000,
        ge=1,
        description="Most decoded pixels one prediction request may cost (all its images together); files past "
        "it get image_too_large.",
    )
    max_aspect_ratio: float = Field(
        50, ge=1, le=100_000, description="Images whose long side is more than this times the short side are refused."
    )
    max_body_kb: int = Field(
        1024,
        ge=1,
        le=1_048_576,
        description="Largest request body of the routes that take no uploads (JSON and small forms), in KiB.",
    )
    max_queued_jobs: int = Field(100, ge=1, description="Queued jobs beyond which POST /train answers 429.")
    max_inflight_predictions: int = Field(
        32, ge=1, description="Predictions being served at once beyond which /predict answers 503."
    )
    max_event_streams: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Open GET /jobs/{id}/events streams per API process beyond which it answers 503 too_many_streams.",
    )
    api_keys: str = Field(
        "",
        description="Comma-separated API keys; when set, every endpoint but GET /, /health/*, /ui and the "
        "docs needs one (Authorization: Bearer <key> or X-API-Key: <key>).",
    )
    cors_origins: str = Field("", description="Comma-separated origins allowed by CORS (none by default).")
    allowed_hosts: str = Field(
        "",
        description="Comma-separated host names (Host header) the server answers; '*' = any. Default: "
        "localhost, 127.0.0.1, ::1 and VT_HOST.",
    )
    header_timeout_s: float = Field(
        10, gt=0, le=3600, description="Longest a client may take to send a request's line and headers."
    )
    body_timeout_s: float = Field(30, gt=0, le=3600, description="Longest wait for the next piece of a request body.")
    min_upload_rate_kb: float = Field(
        4,
        ge=0,
        le=1_048_576,
        description="Slowest average upload rate (KiB/s), measured after the first body_timeout_s; 0 = no minimum.",
    )
    max_connections: int = Field(
        1000, ge=1, le=1_000_000, description="Open client connections beyond which new ones are closed at once."
    )

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
            return normalize_database_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'vision_trainer.db').resolve()}"

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def allowed_host_list(self) -> list[str]:
        """The Host names answered; ``["*"]`` = any."""
        named = [host.strip().lower() for host in self.allowed_hosts.split(",") if host.strip()]
        if named:
            return named
        hosts = ["localhost", "127.0.0.1", "::1", "testserver"]
        bind = self.host.strip().lower()
        if bind and bind not in ("0.0.0.0", "::", "") and bind not in hosts:
            hosts.append(bind)
        return hosts

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_archive_bytes(self) -> int:
        return int(self.max_archive_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def max_data_bytes(self) -> int | None:
        return None if self.max_data_mb is None else int(self.max_data_mb * 1024 * 1024)

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    def resolved_device(self) -> str:
        """The torch device string to train and predict on."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"


def normalize_database_url(url: str) -> str:
    """Plain ``postgresql://`` / ``postgres://`` URLs use psycopg 3, the driver this project installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()

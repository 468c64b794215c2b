"""Request and response schemas, one per direction."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ..services.training import TrainRequest
from .form_fields import unknown_fields_message

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong and how to fix it.")
    code: str = Field(description="Stable snake_case error code (see the README).")
    errors: list[dict[str, Any]] | None = Field(
        None, description="Training uploads only: one entry {field, index, filename, code, detail} per bad file."
    )


class RequestBody(BaseModel):
    """Base of JSON request bodies: a key the schema does not know is refused (422 ``unknown_field``,
    naming the closest valid key) instead of being ignored."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = [*cls.model_fields, *(f.alias for f in cls.model_fields.values() if f.alias)]
            unknown = [str(key) for key in data if key not in known]
            if unknown:
                raise PydanticCustomError(
                    "unknown_field", "{message}", {"message": unknown_fields_message(unknown, known)}
                )
        return data


class ModelRename(RequestBody):
    name: str = Field(min_length=1, max_length=200, description="The new name.")


class DefaultModelSet(RequestBody):
    model_id: str = Field(description="The model /predict uses when a request names none.")


class TrainForm(TrainRequest):
    """The non-class fields of ``POST /train`` and ``POST /datasets/{id}/train``: the training options
    (checked by the service, so the CLI gets the same checks) and what only HTTP adds."""

    wait: bool = Field(False, description="Block until the job ends and answer 200 with the job.")
    skip_invalid: bool = Field(
        False,
        description="Train on the usable files and list the refused ones in the job log instead of "
        "refusing the whole request.",
    )


class Progress(BaseModel):
    phase: str
    done: int
    total: int


class JobPublic(BaseModel):
    job_id: str
    status: JobStatus
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    progress: Progress
    epoch: int | None
    epochs: int | None
    class_names: list[str]
    log: list[str]
    metrics: dict[str, Any] | None
    model_id: str | None
    error: str | None
    params: dict[str, Any]
    attempts: int = Field(description="Times a worker has claimed the job (a worker that died counts).")
    worker: str | None = Field(description="The claim that holds (or last held) the job: host:pid#claim.")
    heartbeat_at: str | None = Field(description="When the worker training the job last said it was alive.")
    duration_s: float | None = Field(description="Seconds from claim to the saved model, for a succeeded job.")
    kind: str = Field("train", description="What the job does: train.")
    dataset_id: str | None = Field(None, description="The dataset the job trains on (none for jobs queued by v1).")
    dataset_version: int | None = Field(None, description="The dataset's version whose photos the job took.")


class JobFinished(JobPublic):
    message: str


class JobAccepted(BaseModel):
    message: str
    job_id: str
    status: JobStatus
    status_url: str
    dataset_id: str | None = None
    log: list[str]


class JobList(BaseModel):
    items: list[JobPublic]
    count: int


class ModelSummary(BaseModel):
    model_id: str
    job_id: str | None
    name: str
    class_names: list[str]
    backbone: str
    created_at: str | None
    dataset_id: str | None = Field(None, description="The dataset the model was trained on.")
    dataset_version: int | None = Field(None, description="That dataset's version.")
    metrics: dict[str, Any] | None


class ModelPublic(ModelSummary):
    params: dict[str, Any]
    data: dict[str, Any]
    history: list[dict[str, Any]]


class ModelList(BaseModel):
    items: list[ModelSummary]
    count: int


class RankedLabel(BaseModel):
    label: str
    confidence: float


class NoveltyPublic(BaseModel):
    score: float = Field(description="Cosine distance of the photo's features to its 5th nearest training photo.")
    threshold: float = Field(
        description="Calibrated on the model's held-out training photos: 5 % of in-distribution photos score above it."
    )
    novel: bool = Field(description='score > threshold: unlike the training photos ("unknown" with reject_novel).')


class HeatmapPublic(BaseModel):
    label: str = Field(description="The label the map explains (the most likely one).")
    grid: list[list[float]] = Field(
        description="Class activation map over the region the model saw, rows top to bottom, values 0-1."
    )
    box: list[int] = Field(
        description="[left, top, right, bottom] of the region the model saw, in the uploaded image's pixels "
        "(after EXIF rotation)."
    )
    png: str = Field(description="Base64 PNG of that region with the map laid over it.")


NOVELTY_FIELD = Field(None, description="null when the model cannot have it (novelty_note says why).")


class PredictionPublic(BaseModel):
    prediction: str
    confidence: float
    model_id: str
    top_k: list[RankedLabel]
    novelty: NoveltyPublic | None = NOVELTY_FIELD
    novelty_note: str | None = None
    heatmap: HeatmapPublic | None = Field(None, description="With explain=true.")


class BatchItem(BaseModel):
    filename: str
    prediction: str | None = None
    confidence: float | None = None
    top_k: list[RankedLabel] | None = None
    novelty: NoveltyPublic | None = NOVELTY_FIELD
    novelty_note: str | None = None
    heatmap: HeatmapPublic | None = None
    error: dict[str, str] | None = None


class BatchPredictionPublic(BaseModel):
    model_id: str
    predictions: list[BatchItem]


class BackboneInfo(BaseModel):
    name: str
    pretrained_available: bool
    input_size: int


class StorageUsage(BaseModel):
    images_bytes: int = Field(description="Datasets' photos and v1 jobs' uploads.")
    models_bytes: int = Field(description="Stored models (heads, v1 and imported checkpoints, exports).")
    feature_cache_bytes: int = Field(description="The feature cache (bounded by VT_FEATURE_CACHE_MB).")
    backbones_bytes: int = Field(description="Exported ONNX backbones (VT_CACHE_DIR).")
    database_bytes: int = Field(description="The SQLite files (with -wal), or PostgreSQL's pg_database_size.")
    other_bytes: int = Field(description="Anything else in the data dir (files being assembled in tmp/).")
    total_bytes: int = Field(description="The sum of the above; what VT_MAX_DATA_MB bounds.")
    limit_bytes: int | None = Field(description="VT_MAX_DATA_MB in bytes; null: no limit.")
    free_bytes: int = Field(description="Free space on the data dir's file system.")


class ServiceInfo(BaseModel):
    message: str
    version: str
    device: str
    runtime: str
    default_backbone: str
    default_backbone_note: str
    backbones: list[BackboneInfo]
    ui: str | None = Field(description="Path of the web page (/ui).")
    storage: StorageUsage | None = Field(
        description="Bytes the stored data takes (as GET /storage, measured every few seconds); null when the "
        "database cannot be reached and nothing was measured before."
    )


class HealthStatus(BaseModel):
    status: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 409, 413, 415, 422, 429, 503, 507)
}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody, "description": "Missing or wrong API key"}}

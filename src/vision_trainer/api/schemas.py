"""Request and response schemas, one per direction."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from .forms import unknown_fields_message

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
                raise PydanticCustomError("unknown_field", "{message}",
                                          {"message": unknown_fields_message(unknown, known)})
        return data


class ModelRename(RequestBody):
    name: str = Field(min_length=1, max_length=200, description="The new name.")


class DefaultModelSet(RequestBody):
    model_id: str = Field(description="The model /predict uses when a request names none.")


class TrainOptions(BaseModel):
    """The non-class fields of ``POST /train``."""

    epochs: int = Field(5, ge=1, le=200, description="Training epochs of the new head.")
    backbone: str | None = Field(
        None, max_length=64, description="resnet18 or efficientnet_lite0; default: see GET /."
    )
    test_split: float = Field(0.2, ge=0.05, le=0.5, description="Fraction of each class held out for testing.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the split, augmentation and head init.")
    name: str | None = Field(None, max_length=200, description="Name of the resulting model.")
    augment_views: int | None = Field(
        None, ge=0, le=16, description="Augmented views per training image (default VT_AUGMENT_VIEWS)."
    )
    early_stopping: bool = Field(
        False, description="Stop when the validation fold's loss stops improving (3 epochs) and keep the best epoch."
    )
    wait: bool = Field(False, description="Block until the job ends and answer 200 with the job.")
    skip_invalid: bool = Field(
        False, description="Train on the usable files and list the refused ones in the job log instead of "
        "refusing the whole request."
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


class JobFinished(JobPublic):
    message: str


class JobAccepted(BaseModel):
    message: str
    job_id: str
    status: JobStatus
    status_url: str
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


class PredictionPublic(BaseModel):
    prediction: str
    confidence: float
    model_id: str
    top_k: list[RankedLabel]


class BatchItem(BaseModel):
    filename: str
    prediction: str | None = None
    confidence: float | None = None
    top_k: list[RankedLabel] | None = None
    error: dict[str, str] | None = None


class BatchPredictionPublic(BaseModel):
    model_id: str
    predictions: list[BatchItem]


class BackboneInfo(BaseModel):
    name: str
    pretrained_available: bool
    input_size: int


class ServiceInfo(BaseModel):
    message: str
    version: str
    device: str
    runtime: str
    default_backbone: str
    default_backbone_note: str
    backbones: list[BackboneInfo]
    ui: str | None = Field(description="Path of the web page (/ui).")


class HealthStatus(BaseModel):
    status: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 409, 413, 415, 422, 429, 503, 507)
}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody, "description": "Missing or wrong API key"}}

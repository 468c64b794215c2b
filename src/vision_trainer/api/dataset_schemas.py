"""Request and response schemas of the datasets: the datasets, their photos and their insights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .schemas import RequestBody


class DatasetCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200, description="Name of the dataset.")


class DatasetRename(RequestBody):
    name: str = Field(min_length=1, max_length=200, description="The new name.")


class DatasetModel(BaseModel):
    model_id: str
    name: str
    backbone: str | None = None
    dataset_version: int | None
    test_accuracy: float | None
    test_accuracy_ci: list[float] | None = None
    created_at: str | None


class DatasetPublic(BaseModel):
    dataset_id: str
    name: str
    version: int = Field(description="Goes up by one on every change of the images or their labels.")
    class_names: list[str] = Field(description="Classes in the order they first appeared.")
    per_class_counts: dict[str, int]
    unlabelled_count: int
    image_count: int
    created_at: str | None
    updated_at: str | None
    models: list[DatasetModel] | None = Field(
        None, description="GET /datasets/{id}: models trained on it, newest first."
    )


class DatasetList(BaseModel):
    items: list[DatasetPublic]
    count: int


class ImagePublic(BaseModel):
    image_id: str
    filename: str = Field(description="The client's filename: shown, never used as a path.")
    label: str | None = Field(description="None for an unlabelled photo.")
    width: int
    height: int
    content_hash: str = Field(description="SHA-256 of the file's bytes.")
    added_at: str | None


class ImageList(BaseModel):
    items: list[ImagePublic]
    count: int


class AddedImage(BaseModel):
    image_id: str
    filename: str
    label: str | None


class DuplicateImage(BaseModel):
    filename: str
    image_id: str = Field(description="The photo with the same content already in the dataset.")


class ImagesAdded(BaseModel):
    dataset_id: str
    version: int
    added: list[AddedImage]
    duplicates: list[DuplicateImage] = Field(description="Exact duplicates (same content), not stored again.")
    errors: list[dict[str, Any]] = Field(
        description="Refused files (with skip_invalid): {field, index, filename, code, detail}."
    )
    skipped: list[dict[str, Any]] = Field(
        description="Archive entries left out: hidden files, links, files outside a "
        "class folder, non-images: {filename, code, detail}."
    )


class ImagesRelabel(RequestBody):
    image_ids: list[str] = Field(min_length=1, max_length=100_000, description="Photos of the dataset.")
    label: str | None = Field(description="The new label; null makes them unlabelled.")


class ImagesDelete(RequestBody):
    image_ids: list[str] = Field(min_length=1, max_length=100_000, description="Photos of the dataset.")


class ImagesChanged(BaseModel):
    version: int
    updated: int | None = None
    deleted: int | None = None


class SuspectLabel(BaseModel):
    image_id: str
    filename: str
    label: str | None
    suggested_label: str | None
    confidence: float = Field(description="How sure heads that never saw this photo are of the suggested label.")
    score: float | None = Field(
        None,
        description="1 - the probability heads that never saw the photo give its label: higher = more likely wrong "
        "(the list is ranked by it; its length comes from confident learning's per-class thresholds). "
        "null in insights computed before scores existed.",
    )


class NearDuplicates(BaseModel):
    image_ids: list[str]
    filenames: list[str]
    labels: list[str | None]
    similarity: float
    kind: Literal["same_class", "cross_class", "cross_split"] = Field(
        description="cross_class: two labels for one photo (one is wrong); cross_split: would leak between train "
        "and test (training keeps the group on one side); same_class: a copy."
    )


class OutlierPhoto(BaseModel):
    image_id: str
    filename: str
    label: str | None
    score: float = Field(
        description="How unlike the dataset the photo is: the mean of two robust z-scores, its distance to the "
        "nearest class and to its 10th most similar photo (in units of the dataset's own spread); listed from 3.0."
    )


class LabelSuggestion(BaseModel):
    image_id: str
    filename: str
    suggested_label: str | None
    confidence: float


class CurvePoint(BaseModel):
    photos: int
    accuracy: float


class ClassCurvePoint(BaseModel):
    photos: int = Field(description="Labelled photos of the class.")
    recall: float


class LearningCurvePublic(BaseModel):
    overall: list[CurvePoint] = Field(
        description="k-fold accuracy on 25/50/75/100 % of the labelled photos (photos = labelled photos used)."
    )
    per_class: dict[str, list[ClassCurvePoint]]
    projection: list[CurvePoint] = Field(
        description="The fitted inverse power law beyond the dataset's size (up to 4 times it)."
    )
    advice: list[str]


class InsightsPublic(BaseModel):
    dataset_version: int = Field(description="The version analyzed.")
    current_version: int
    stale: bool = Field(description="The dataset changed since: analyze again.")
    analyzed_at: str | None
    job_id: str
    backbone: str
    image_count: int
    seconds: float
    suspect_labels: list[SuspectLabel]
    near_duplicates: list[NearDuplicates]
    outliers: list[OutlierPhoto]
    class_balance: dict[str, Any]
    suggestions: list[LabelSuggestion]
    cv_accuracy: dict[str, Any] | None
    probe_backbone: str | None = Field(
        None, description="The backbone whose features the out-of-fold heads (suspects, suggestions, curve) used."
    )
    backbone_selection: list[dict[str, Any]] | None = None
    learning_curve: LearningCurvePublic | None = None
    warnings: list[str]

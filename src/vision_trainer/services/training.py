"""Submitting training: check a request, take the dataset's photos, commit a queued job, hand it to the queue.

There is one training path: the seed's ``POST /train`` creates a dataset from its upload and trains
on it like ``POST /datasets/{id}/train``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..ml.backbones import resolve_backbone
from ..ml.recipe import ClassWeighting, FeatureDepth, Recipe, Tune, recipe_field
from ..ml.tuning import cut_point
from .backbones import AUTO, BackboneChoice, auto_candidates, choose_backbone
from .context import Services
from .datasets import AddImages, ImageGroup, create_dataset, delete_dataset, incoming_size
from .datasets import add_images as add_dataset_images
from .errors import InvalidRequest
from .queue import JobQueue
from .snapshot import training_snapshot
from .storage import check_room
from .submit import check_queue_room, queue_job
from .uploads import Upload, check_labels

log = logging.getLogger(__name__)


class TrainRequest(BaseModel):
    """What a client asks of a training job, checked the same way for the API, the CLI and the workers.

    The recipe's own fields are declared from ``ml.recipe.Recipe`` (bounds, defaults, descriptions), so
    they are stated once; a field added here shows up in the API's forms, the CLI's flags and the page.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = recipe_field("epochs")
    backbone: str | None = Field(
        None,
        max_length=64,
        description="A backbone of GET /, or auto: the one whose features classify the training photos best "
        "out of fold; default: see GET /.",
    )
    test_split: float = Field(0.2, ge=0.05, le=0.5, description="Fraction of each class held out for testing.")
    seed: int = recipe_field("seed")
    name: str | None = Field(None, max_length=200, description="Name of the resulting model.")
    augment_views: int | None = recipe_field(
        "augment_views", default=None, description="Augmented views per training image (default VT_AUGMENT_VIEWS)."
    )
    early_stopping: bool = recipe_field("early_stopping")
    class_weighting: ClassWeighting = recipe_field("class_weighting")
    depth: FeatureDepth = recipe_field("depth")
    tune: Tune = recipe_field("tune")
    cut: str | None = recipe_field("cut")
    tune_epochs: int = recipe_field("tune_epochs")


class TrainParams(TrainRequest):
    """What a training job row stores: the request as validated, with the server's choices filled in
    (``augment_views``, the backbone and why), and what the upload skipped. The runner reads it back
    with ``model_validate``; rows written by earlier versions lack some keys and get their defaults."""

    model_config = ConfigDict(extra="ignore")

    backbone: str = Field(description="A backbone name, or auto until the job picks one.")
    augment_views: int = recipe_field("augment_views")
    backbone_requested: str | None = None
    backbone_note: str = ""
    skip_invalid: bool = False
    skipped_files: list[dict[str, Any]] = Field(default_factory=list)
    duplicates_removed: int = 0

    def recipe(self) -> Recipe:
        """The recipe the head trains with."""
        return Recipe.model_validate(self.model_dump(include=set(Recipe.model_fields)))


def check_train_request(values: Mapping[str, Any]) -> TrainRequest:
    """Check training options given as a mapping (the CLI's flags, a serialized job).

    Raises:
        InvalidRequest: a value out of range or of the wrong type (``invalid_parameter``).
    """
    try:
        return TrainRequest.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise InvalidRequest(validation_details(exc), code="invalid_parameter") from None


def check_cut(services: Services, choice: BackboneChoice, options: TrainRequest) -> None:
    """A ``cut`` must be a cut point of the backbone (of every candidate, for ``backbone=auto``).

    Raises:
        InvalidRequest: it is not (``invalid_parameter``, naming the valid ones).
    """
    if options.cut is None or options.tune == "head":
        return
    if options.tune == "full":
        raise InvalidRequest("cut: tune=full trains every layer; leave cut out", code="invalid_parameter")
    names = auto_candidates(services.settings) if choice.requested == AUTO else [choice.spec.name]
    for name in names:
        try:
            cut_point(resolve_backbone(name), options.cut)
        except ValueError as exc:
            raise InvalidRequest(f"cut: {exc}", code="invalid_parameter") from None


def validation_details(exc: ValidationError) -> str:
    """A pydantic error as one sentence per field."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())


@dataclass(frozen=True)
class TrainingUpload:
    """The seed's upload: ``files[i]`` are the photos of ``labels[i]``, or an ``archive`` of class folders."""

    labels: Sequence[str] = ()
    files: Sequence[Sequence[Upload]] = ()
    options: TrainRequest = field(default_factory=TrainRequest)
    archive: Upload | None = None
    skip_invalid: bool = False
    declared_bytes: int | None = None  # the request's size (Content-Length); None: the uploads' own sizes


def submit_dataset_training(
    services: Services,
    queue: JobQueue,
    dataset_id: str,
    options: TrainRequest,
    *,
    extra_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Queue a job that trains on the dataset's labelled photos as they are now (its version).

    Returns:
        The job view.

    Raises:
        NotFound: no such dataset.
        InvalidRequest: bad options, unknown backbone, missing weights, too few classes or photos.
        TooManyRequests: ``VT_MAX_QUEUED_JOBS`` jobs already wait.
        Unavailable: the job queue cannot be reached (the job is not created).
    """
    options = check_train_request(options.model_dump())
    choice = choose_backbone(services.settings, options.backbone)
    check_cut(services, choice, options)
    snapshot = training_snapshot(services, dataset_id, max_classes=services.settings.max_classes)
    check_queue_room(services)
    params = TrainParams.model_validate(
        {
            **options.model_dump(),
            "backbone": AUTO if choice.requested == AUTO else choice.spec.name,
            "backbone_requested": choice.requested,
            "backbone_note": choice.note,
            "augment_views": services.settings.augment_views
            if options.augment_views is None
            else options.augment_views,
            **(extra_params or {}),
        }
    )
    return queue_job(
        services,
        queue,
        dataset_id=snapshot.dataset_id,
        version=snapshot.version,
        class_names=snapshot.class_names,
        inputs=snapshot.inputs,
        params=params,
        kind="train",
    )


def submit_training(services: Services, queue: JobQueue, request: TrainingUpload) -> dict[str, Any]:
    """The seed's ``POST /train``: a new dataset from the upload, then a job on it.

    Nothing is left behind when a check fails: a refused upload, or a job that cannot be queued,
    takes its new dataset (rows and files) with it.

    Returns:
        The job view.

    Raises:
        InvalidRequest: bad labels, too few images, unusable files, unknown backbone, missing weights.
        InsufficientStorage: the stored data is, or with this upload would be, over VT_MAX_DATA_MB.
    """
    settings = services.settings
    options = check_train_request(request.options.model_dump())
    groups = _class_groups(request, settings.max_classes)
    # an unknown backbone or cut point is refused before anything is stored
    check_cut(services, choose_backbone(settings, options.backbone), options)
    check_queue_room(services)
    check_room(services, incoming_size(request.declared_bytes, [u for g in groups for u in g.uploads], request.archive))
    name = options.name or (" vs ".join(g.label or "" for g in groups)[:200] if groups else "uploaded archive")
    dataset = create_dataset(services, name)
    try:
        added = add_dataset_images(
            services,
            dataset["dataset_id"],
            AddImages(
                groups=groups,
                archive=request.archive,
                skip_invalid=request.skip_invalid,
                declared_bytes=request.declared_bytes,
            ),
        )
        skipped = added["errors"] + added["skipped"] if request.archive is not None else added["errors"]
        return submit_dataset_training(
            services,
            queue,
            dataset["dataset_id"],
            options,
            extra_params={
                "skip_invalid": request.skip_invalid,
                "skipped_files": skipped,
                "duplicates_removed": len(added["duplicates"]),
            },
        )
    except BaseException:
        delete_dataset(services, dataset["dataset_id"])
        raise


def _class_groups(request: TrainingUpload, max_classes: int) -> list[ImageGroup]:
    if request.archive is not None and request.labels:
        raise InvalidRequest(
            "send either an archive of class folders or label1..N with files1..N, not both", code="invalid_class_fields"
        )
    if request.archive is not None:
        return []
    labels = check_labels(list(request.labels), max_classes=max_classes)
    for number, uploads in enumerate(request.files, start=1):
        if len(uploads) < 2:
            raise InvalidRequest(
                f"files{number} has {len(uploads)} image(s); every class needs at least 2 "
                "(one to train on and one to test with)",
                code="too_few_images",
            )
    return [ImageGroup(label, uploads, f"files{n}") for n, (label, uploads) in enumerate(zip(labels, request.files), 1)]

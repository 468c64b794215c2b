"""Submitting training: check a request, take the dataset's photos, commit a queued job, hand it to the queue.

There is one training path: the seed's ``POST /train`` creates a dataset from its upload and trains
on it like ``POST /datasets/{id}/train``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..store import repository as repo
from .backbones import AUTO, choose_backbone
from .context import Services
from .datasets import AddImages, ImageGroup, create_dataset, delete_dataset, incoming_size, training_snapshot
from .datasets import add_images as add_dataset_images
from .errors import InvalidRequest, TooManyRequests, Unavailable
from .queue import JobQueue
from .storage import check_room
from .uploads import Upload, check_labels
from .views import job_view

log = logging.getLogger(__name__)


class TrainingOptions(BaseModel):
    """How to train, checked the same way for the API, the CLI and the workers."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(5, ge=1, le=200, description="Training epochs of the new head.")
    backbone: str | None = Field(
        None,
        max_length=64,
        description="A backbone of GET /, or auto: the one whose features classify the training photos best "
        "out of fold; default: see GET /.",
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
    class_weighting: Literal["none", "balanced"] = Field(
        "none", description="balanced: every class weighs the same in the loss, however many photos it has."
    )


TrainRequest = TrainingOptions  # the name the recipe refactor settles on


def training_options(values: Mapping[str, Any]) -> TrainingOptions:
    """Check training options given as a mapping (the CLI's flags, a serialized job).

    Raises:
        InvalidRequest: a value out of range or of the wrong type (``invalid_parameter``).
    """
    try:
        return TrainingOptions.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(details, code="invalid_parameter") from None


@dataclass(frozen=True)
class TrainingRequest:
    """The seed's upload: ``files[i]`` are the photos of ``labels[i]``, or an ``archive`` of class folders."""

    labels: Sequence[str] = ()
    files: Sequence[Sequence[Upload]] = ()
    options: TrainingOptions = field(default_factory=TrainingOptions)
    archive: Upload | None = None
    skip_invalid: bool = False
    declared_bytes: int | None = None  # the request's size (Content-Length); None: the uploads' own sizes


def submit_dataset_training(
    services: Services,
    queue: JobQueue,
    dataset_id: str,
    options: TrainingOptions,
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
    options = training_options(options.model_dump())
    choice = choose_backbone(services.settings, options.backbone)
    snapshot = training_snapshot(services, dataset_id, max_classes=services.settings.max_classes)
    _check_queue_room(services)
    params = {
        "epochs": options.epochs,
        "backbone": AUTO if choice.requested == AUTO else choice.spec.name,
        "backbone_requested": choice.requested,
        "backbone_note": choice.note,
        "test_split": options.test_split,
        "seed": options.seed,
        "name": options.name,
        "augment_views": services.settings.augment_views if options.augment_views is None else options.augment_views,
        "early_stopping": options.early_stopping,
        "class_weighting": options.class_weighting,
        "skip_invalid": False,
        "skipped_files": [],
        **(extra_params or {}),
    }
    return queue_job(
        services,
        queue,
        dataset_id=snapshot.dataset_id,
        version=snapshot.version,
        class_names=snapshot.class_names,
        inputs=snapshot.inputs,
        params=params,
    )


def queue_job(
    services: Services,
    queue: JobQueue,
    *,
    dataset_id: str,
    version: int,
    class_names: list[str],
    inputs: list[dict[str, Any]],
    params: dict[str, Any],
    kind: str = "train",
) -> dict[str, Any]:
    """Commit a queued job on a dataset's snapshot, then hand its id to the queue (the job is taken back
    if the queue cannot be reached: 503 ``queue_unavailable``). Returns the job view."""
    job_id = uuid.uuid4().hex
    with services.db.session() as session:
        job = repo.create_job(
            session,
            job_id=job_id,
            params=params,
            class_names=class_names,
            inputs=inputs,
            dataset_id=dataset_id,
            dataset_version=version,
            kind=kind,
        )
        view = job_view(job, [])
    try:
        queue.enqueue(job_id)
    except Exception as exc:
        # Nobody would ever run it: take the job back so the client can retry with nothing half-made.
        log.error("could not enqueue job %s: %s", job_id, exc)
        with services.db.session() as session:
            withdrawn = repo.set_job_status(session, job_id=job_id, expected=["queued"], status="queued")
            if withdrawn:
                repo.delete_job(session, job_id=job_id)
        if not withdrawn:  # the message went out after all and a worker has the job
            return view
        raise Unavailable(
            f"the job queue cannot be reached ({type(exc).__name__}); the job was not created, retry later",
            code="queue_unavailable",
        ) from None
    return view


def submit_training(services: Services, queue: JobQueue, request: TrainingRequest) -> dict[str, Any]:
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
    options = training_options(request.options.model_dump())
    groups = _class_groups(request, settings.max_classes)
    choose_backbone(settings, options.backbone)  # an unknown backbone is refused before anything is stored
    _check_queue_room(services)
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


def _class_groups(request: TrainingRequest, max_classes: int) -> list[ImageGroup]:
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


def _check_queue_room(services: Services) -> None:
    with services.db.session() as session:
        queued = repo.count_jobs(session, statuses=["queued"])
    if queued >= services.settings.max_queued_jobs:
        raise TooManyRequests(
            f"{queued} jobs are already waiting (VT_MAX_QUEUED_JOBS); retry when some have run",
            code="queue_full",
        )

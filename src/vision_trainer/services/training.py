"""Submitting training: check a request, store its photos, commit a queued job, hand it to the queue."""

from __future__ import annotations

import errno
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from ..store import repository as repo
from ..store.files import remove_tree
from .backbones import choose_backbone
from .context import Services
from .errors import InsufficientStorage, TooManyRequests, Unavailable
from .queue import JobQueue
from .uploads import (
    Upload,
    UploadLimits,
    check_class_sizes,
    check_labels,
    refuse_bad_files,
    store_uploads,
)
from .views import job_view

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainingRequest:
    """A validated-shape training request; ``files[i]`` are the images of ``labels[i]``."""

    labels: Sequence[str]
    files: Sequence[Sequence[Upload]]
    epochs: int = 5
    backbone: str | None = None
    test_split: float = 0.2
    seed: int = 0
    name: str | None = None
    augment_views: int | None = None
    skip_invalid: bool = False
    early_stopping: bool = False


def submit_training(services: Services, queue: JobQueue, request: TrainingRequest) -> dict[str, Any]:
    """Check and store an upload, commit a queued job, then hand its id to the queue.

    Nothing is left behind when a check fails: the files go to a private staging folder that becomes
    the job's folder only after every check passed, and the row is written after the rename.

    Returns:
        The job view.

    Raises:
        InvalidRequest: bad labels, too few images, unusable files, unknown backbone, missing weights.
    """
    settings = services.settings
    class_names = check_labels(list(request.labels), max_classes=settings.max_classes)
    choice = choose_backbone(settings, request.backbone)
    _check_queue_room(services)
    job_id = uuid.uuid4().hex
    job_dir = services.files.job_dir(job_id)
    inputs, skipped = _store_upload(services, request, len(class_names), job_dir)
    params = {
        "epochs": request.epochs,
        "backbone": choice.spec.name,
        "backbone_requested": choice.requested,
        "backbone_note": choice.note,
        "test_split": request.test_split,
        "seed": request.seed,
        "name": request.name,
        "augment_views": settings.augment_views if request.augment_views is None else request.augment_views,
        "early_stopping": request.early_stopping,
        "skip_invalid": request.skip_invalid,
        "skipped_files": skipped,
    }
    try:
        with services.db.session() as session:
            job = repo.create_job(
                session, job_id=job_id, params=params, class_names=class_names, inputs=inputs
            )
            view = job_view(job, [])
    except BaseException:
        remove_tree(job_dir)
        raise
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
        remove_tree(job_dir)
        raise Unavailable(
            f"the job queue cannot be reached ({type(exc).__name__}); the job was not created, retry later",
            code="queue_unavailable",
        ) from None
    return view


def _store_upload(
    services: Services, request: TrainingRequest, num_classes: int, job_dir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write and check the files in a staging folder, then rename it to ``job_dir``; on any failure
    remove what was written."""
    settings = services.settings
    staging = services.files.staging_dir()
    limits = UploadLimits(max_file_bytes=settings.max_file_bytes, max_pixels=settings.max_image_pixels)
    try:
        inputs, skipped = store_uploads(request.files, staging, limits)
        if skipped and not request.skip_invalid:
            refuse_bad_files(skipped)
        check_class_sizes(inputs, num_classes)
        staging.rename(job_dir)
    except OSError as exc:
        remove_tree(staging)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the data dir is full; free space and retry", code="storage_full") from None
        raise
    except BaseException:
        remove_tree(staging)
        raise
    return inputs, skipped


def _check_queue_room(services: Services) -> None:
    with services.db.session() as session:
        queued = repo.count_jobs(session, statuses=["queued"])
    if queued >= services.settings.max_queued_jobs:
        raise TooManyRequests(
            f"{queued} jobs are already waiting (VT_MAX_QUEUED_JOBS); retry when some have run",
            code="queue_full",
        )



"""``vision-trainer train``: train on a folder (or archive) of class folders, or on a dataset, in this process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import CommandError, emit, open_services
from .folders import read_source
from .follow import run_and_follow
from .options import add_model_flags, model_values

if TYPE_CHECKING:
    from ..services.context import Services
    from ..services.queue import JobQueue
    from ..services.training import TrainRequest

SUMMARY_METRICS = (
    "test_accuracy",
    "test_accuracy_ci",
    "test_count",
    "per_class",
    "confusion_matrix",
    "calibration",
    "features_extracted",
    "features_reused",
    "best_epoch",
    "tuning",
)


def _options(args: argparse.Namespace) -> TrainRequest:
    """The training options, checked by the service (``invalid_parameter``) before anything is read or stored."""
    from ..services.training import TrainRequest, check_train_request

    return check_train_request(model_values(args, TrainRequest))


def _train(args: argparse.Namespace) -> int:
    from ..jobs.inline import CallerRunsQueue

    if (args.folder is None) == (args.dataset is None):
        raise CommandError("give either a FOLDER (or archive) to train on, or --dataset ID", code="invalid_parameter")
    options = _options(args)
    with open_services() as services:
        job = _submit(services, CallerRunsQueue(), args, options)
        job = run_and_follow(services, job["job_id"])
    emit(_job_summary(job))
    if job["status"] != "succeeded":
        print(f"error (training_{job['status']}): {job['error'] or 'the job did not finish'}", file=sys.stderr)
        return 1
    return 0


def _submit(services: Services, queue: JobQueue, args: argparse.Namespace, options: TrainRequest) -> dict[str, Any]:
    """Queue the job on ``--dataset``, or on a new dataset made of the folder; returns the job view."""
    from ..services import training

    if args.dataset is not None:
        return training.submit_dataset_training(services, queue, args.dataset, options)
    source = read_source(args.folder, label=None, unlabelled=False, min_classes=2)
    request = training.TrainingUpload(
        labels=[g.label or "" for g in source.groups],
        files=[g.uploads for g in source.groups],
        options=options,
        archive=source.archive,
        skip_invalid=args.skip_invalid,
    )
    with source.reading():
        return training.submit_training(services, queue, request)


def _job_summary(job: dict[str, Any]) -> dict[str, Any]:
    metrics = job["metrics"] or {}
    return {
        "job_id": job["job_id"],
        "status": job["status"],
        "model_id": job["model_id"],
        "dataset_id": job["dataset_id"],
        "dataset_version": job["dataset_version"],
        "class_names": job["class_names"],
        "backbone": job["params"].get("backbone"),
        "epochs": job["epochs"],
        "duration_s": job["duration_s"],
        "error": job["error"],
        "metrics": {k: metrics[k] for k in SUMMARY_METRICS if k in metrics},
        "log": job["log"],
    }


def add_command(commands: Any) -> None:
    """``train``, on the top-level sub-parsers ``commands``: its own arguments, then one flag per field of
    the training request."""
    from ..services.training import TrainRequest

    train = commands.add_parser(
        "train",
        help="train on FOLDER/<class>/<images> (or an archive of class folders), or on --dataset ID, "
        "and register the model",
    )
    train.add_argument("folder", type=Path, nargs="?")
    train.add_argument("--dataset", help="train on this dataset's labelled photos as they are now")
    train.add_argument("--skip-invalid", action="store_true", help="train on the usable images, list the rest")
    add_model_flags(train, TrainRequest)
    train.set_defaults(func=_train)

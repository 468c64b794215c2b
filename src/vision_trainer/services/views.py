"""Rows -> the JSON shapes of the HTTP contract."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..store.tables import Job, Model


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands datetimes back without their zone; they were stored in UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def job_view(job: Job, log: list[str]) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job.status,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "progress": {"phase": job.phase, "done": job.done, "total": job.total},
        "epoch": job.epoch,
        "epochs": job.params.get("epochs"),
        "class_names": job.class_names,
        "log": log,
        "metrics": job.metrics,
        "model_id": job.model_id,
        "error": job.error,
        "params": job.params,
        "attempts": job.attempts,
        "worker": job.worker_id,
        "heartbeat_at": iso(job.heartbeat_at),
        "duration_s": job.duration_s,
        "kind": job.kind or "train",
        "dataset_id": job.dataset_id,
        "dataset_version": job.dataset_version,
    }


# What lists show of a model's metrics: the figure and how far to trust it.
SUMMARY_METRICS = ("test_accuracy", "test_accuracy_ci", "test_count", "cv_accuracy", "warnings")


def model_summary(model: Model) -> dict[str, Any]:
    metrics = model.metrics or {}
    return {
        "model_id": model.id,
        "job_id": model.job_id,
        "name": model.name,
        "class_names": model.class_names,
        "backbone": model.backbone,
        "created_at": iso(model.created_at),
        "dataset_id": model.dataset_id,
        "dataset_version": (model.data or {}).get("dataset_version"),
        "metrics": {key: metrics.get(key) for key in SUMMARY_METRICS},
    }


def model_view(model: Model) -> dict[str, Any]:
    return {
        **model_summary(model),
        "params": model.params,
        "data": model.data,
        "history": model.history,
        "metrics": model.metrics,
    }

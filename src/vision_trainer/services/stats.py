"""Numbers for monitoring, read from the job table so that jobs trained by remote workers count too."""

from __future__ import annotations

from dataclasses import dataclass

from ..store import repository as repo
from .context import Services

DURATION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)


@dataclass(frozen=True)
class JobStats:
    by_status: dict[str, int]
    duration_buckets: list[tuple[float, int]]  # (upper bound, cumulative count), +Inf excluded
    duration_count: int
    duration_sum: float
    last_images_per_s: float | None
    models: int


def job_stats(services: Services) -> JobStats:
    with services.db.session() as session:
        counts = repo.job_counts(session)
        cumulative, count, total = repo.duration_histogram(session, buckets=DURATION_BUCKETS)
        return JobStats(
            by_status={status: counts.get(status, 0) for status in (*repo.ACTIVE_STATUSES, *repo.FINAL_STATUSES)},
            duration_buckets=list(zip(DURATION_BUCKETS, cumulative)),
            duration_count=count,
            duration_sum=total,
            last_images_per_s=repo.last_images_per_s(session),
            models=repo.count_models(session),
        )

"""Queries and updates of datasets and their images, keyword-only. Callers own the session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .repository import rowcount
from .tables import Dataset, DatasetImage, Job, Model, utcnow


def create_dataset(session: Session, *, dataset_id: str, name: str, class_names: Sequence[str] = ()) -> Dataset:
    dataset = Dataset(id=dataset_id, name=name, version=1, class_names=list(class_names))
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, *, dataset_id: str, for_update: bool = False) -> Dataset | None:
    query = select(Dataset).where(Dataset.id == dataset_id)
    if for_update:  # writers of one dataset take turns (PostgreSQL; SQLite serialises writers anyway)
        query = query.with_for_update()
    return session.scalar(query)


def lock_dataset(session: Session, *, dataset_id: str) -> Dataset | None:
    """The dataset, freshly read and locked until the session ends; None when it is gone.

    Call it first in ``Database.write_session()``: on PostgreSQL the row lock makes every writer of the
    dataset (and a job submission racing its deletion) wait its turn; on SQLite the write session already
    holds the database's write lock."""
    query = select(Dataset).where(Dataset.id == dataset_id).with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def list_datasets(session: Session, *, limit: int, offset: int) -> tuple[list[Dataset], int]:
    rows = session.scalars(select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id).limit(limit).offset(offset))
    return list(rows), session.scalar(select(func.count()).select_from(Dataset)) or 0


def delete_dataset(session: Session, *, dataset_id: str) -> None:
    session.execute(delete(DatasetImage).where(DatasetImage.dataset_id == dataset_id))
    session.execute(delete(Dataset).where(Dataset.id == dataset_id))


def bump_version(session: Session, dataset: Dataset, class_names: list[str]) -> int:
    """Record a change: version + 1, the class list, the time. Returns the new version."""
    dataset.version += 1
    dataset.class_names = class_names
    dataset.updated_at = utcnow()
    session.flush()
    return dataset.version


def label_counts(session: Session, *, dataset_ids: Sequence[str]) -> dict[str, dict[str | None, int]]:
    """``{dataset_id: {label or None: images}}``."""
    counts: dict[str, dict[str | None, int]] = {dataset_id: {} for dataset_id in dataset_ids}
    rows = session.execute(
        select(DatasetImage.dataset_id, DatasetImage.label, func.count())
        .where(DatasetImage.dataset_id.in_(list(dataset_ids)))
        .group_by(DatasetImage.dataset_id, DatasetImage.label)
    )
    for dataset_id, label, count in rows:
        counts[dataset_id][label] = count
    return counts


def hashes(session: Session, *, dataset_id: str, content_hashes: Sequence[str]) -> dict[str, str]:
    """``{content_hash: image_id}`` of the given hashes already in the dataset."""
    found: dict[str, str] = {}
    wanted = list(dict.fromkeys(content_hashes))
    for start in range(0, len(wanted), 500):
        rows = session.execute(
            select(DatasetImage.content_hash, DatasetImage.id).where(
                DatasetImage.dataset_id == dataset_id, DatasetImage.content_hash.in_(wanted[start : start + 500])
            )
        )
        found.update({content_hash: image_id for content_hash, image_id in rows})
    return found


def add_images(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    session.add_all([DatasetImage(**row) for row in rows])
    session.flush()


def list_images(
    session: Session,
    *,
    dataset_id: str,
    label: str | None = None,
    unlabelled: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[DatasetImage], int]:
    conditions = [DatasetImage.dataset_id == dataset_id]
    if unlabelled:
        conditions.append(DatasetImage.label.is_(None))
    elif label is not None:
        conditions.append(DatasetImage.label == label)
    query = select(DatasetImage).where(*conditions).order_by(DatasetImage.added_at, DatasetImage.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    count = session.scalar(select(func.count()).select_from(DatasetImage).where(*conditions)) or 0
    return list(session.scalars(query)), count


def get_images(session: Session, *, dataset_id: str, image_ids: Sequence[str]) -> list[DatasetImage]:
    found: list[DatasetImage] = []
    ids = list(dict.fromkeys(image_ids))
    for start in range(0, len(ids), 500):
        found += session.scalars(
            select(DatasetImage).where(
                DatasetImage.dataset_id == dataset_id, DatasetImage.id.in_(ids[start : start + 500])
            )
        )
    return found


def set_labels(session: Session, *, dataset_id: str, image_ids: Sequence[str], label: str | None) -> int:
    result = session.execute(
        update(DatasetImage)
        .where(DatasetImage.dataset_id == dataset_id, DatasetImage.id.in_(list(image_ids)))
        .values(label=label)
    )
    return rowcount(result)


def delete_images(session: Session, *, dataset_id: str, image_ids: Sequence[str]) -> int:
    result = session.execute(
        delete(DatasetImage).where(DatasetImage.dataset_id == dataset_id, DatasetImage.id.in_(list(image_ids)))
    )
    return rowcount(result)


def active_jobs(session: Session, *, dataset_id: str) -> list[str]:
    return list(
        session.scalars(select(Job.id).where(Job.dataset_id == dataset_id, Job.status.in_(("queued", "running"))))
    )


def models_of(session: Session, *, dataset_id: str) -> list[Model]:
    return list(
        session.scalars(select(Model).where(Model.dataset_id == dataset_id).order_by(Model.created_at.desc(), Model.id))
    )

"""The datasets and their photos' labels: views, create, list, get, rename, delete; browse, relabel, remove."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...store import datasets as repo
from ...store.files import remove_tree
from ...store.tables import Dataset, DatasetImage
from ..context import Services
from ..errors import Conflict, InvalidRequest, NotFound
from ..storage import forget_usage
from ..uploads import (
    check_label,
    label_key,
)
from ..views import iso

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 200


# --- views ---------------------------------------------------------------------------------------


def dataset_view(dataset: Dataset, counts: dict[str | None, int]) -> dict[str, Any]:
    per_class = {name: counts.get(name, 0) for name in dataset.class_names}
    return {
        "dataset_id": dataset.id,
        "name": dataset.name,
        "version": dataset.version,
        "class_names": list(dataset.class_names),
        "per_class_counts": per_class,
        "unlabelled_count": counts.get(None, 0),
        "image_count": sum(counts.values()),
        "created_at": iso(dataset.created_at),
        "updated_at": iso(dataset.updated_at),
    }


def image_view(image: DatasetImage) -> dict[str, Any]:
    return {
        "image_id": image.id,
        "filename": image.filename,
        "label": image.label,
        "width": image.width,
        "height": image.height,
        "content_hash": image.content_hash,
        "added_at": iso(image.added_at),
    }


def require_dataset(session: Any, dataset_id: str, *, for_update: bool = False) -> Dataset:
    """The dataset (locked until the session ends with ``for_update``; use it in ``db.write_session()``)."""
    if for_update:
        dataset = repo.lock_dataset(session, dataset_id=dataset_id)
    else:
        dataset = repo.get_dataset(session, dataset_id=dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}; GET /datasets lists them")
    return dataset


def dataset_summary(session: Any, dataset: Dataset) -> dict[str, Any]:
    return dataset_view(dataset, repo.label_counts(session, dataset_ids=[dataset.id])[dataset.id])


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"a dataset name must have 1 to {MAX_NAME_LENGTH} characters", code="invalid_name")
    return name


# --- the dataset itself ---------------------------------------------------------------------------


def create_dataset(services: Services, name: str) -> dict[str, Any]:
    """A new empty dataset (version 1). Raises InvalidRequest (``invalid_name``)."""
    name = _check_name(name)
    with services.db.session() as session:
        return dataset_summary(session, repo.create_dataset(session, dataset_id=uuid.uuid4().hex, name=name))


def list_datasets(services: Services, *, limit: int, offset: int) -> dict[str, Any]:
    with services.db.session() as session:
        datasets, count = repo.list_datasets(session, limit=limit, offset=offset)
        counts = repo.label_counts(session, dataset_ids=[d.id for d in datasets])
        return {"items": [dataset_view(d, counts[d.id]) for d in datasets], "count": count}


def get_dataset(services: Services, dataset_id: str) -> dict[str, Any]:
    """The dataset with its counts and the models trained on it (newest first). Raises NotFound."""
    with services.db.session() as session:
        view = dataset_summary(session, require_dataset(session, dataset_id))
        view["models"] = [
            {
                "model_id": m.id,
                "name": m.name,
                "dataset_version": (m.data or {}).get("dataset_version"),
                "test_accuracy": (m.metrics or {}).get("test_accuracy"),
                "test_accuracy_ci": (m.metrics or {}).get("test_accuracy_ci"),
                "backbone": m.backbone,
                "created_at": iso(m.created_at),
            }
            for m in repo.models_of(session, dataset_id=dataset_id)
        ]
        return view


def rename_dataset(services: Services, dataset_id: str, name: str) -> dict[str, Any]:
    """Raises NotFound, InvalidRequest. A new name is not a change of the images: same version."""
    name = _check_name(name)
    with services.db.session() as session:
        dataset = require_dataset(session, dataset_id)
        dataset.name = name
        return dataset_summary(session, dataset)


def delete_dataset(services: Services, dataset_id: str) -> None:
    """Remove the dataset and its images; models trained on it stay (their image links go).

    Raises:
        NotFound: no such dataset.
        Conflict: a job is queued or running on it (``dataset_busy``).
    """
    with services.db.write_session() as session:
        require_dataset(session, dataset_id, for_update=True)
        if busy := repo.active_jobs(session, dataset_id=dataset_id):
            raise Conflict(
                f"job {busy[0]} is training on this dataset; wait for it or cancel it first", code="dataset_busy"
            )
        repo.delete_dataset(session, dataset_id=dataset_id)
    remove_tree(services.files.dataset_dir(dataset_id))
    forget_usage(services)


def list_images(
    services: Services,
    dataset_id: str,
    *,
    label: str | None = None,
    unlabelled: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    with services.db.session() as session:
        require_dataset(session, dataset_id)
        images, count = repo.list_images(
            session, dataset_id=dataset_id, label=label, unlabelled=unlabelled, limit=limit, offset=offset
        )
        return {"items": [image_view(i) for i in images], "count": count}


def image_file(services: Services, dataset_id: str, image_id: str) -> Path:
    """The stored photo. Raises NotFound."""
    with services.db.session() as session:
        require_dataset(session, dataset_id)
        if not repo.get_images(session, dataset_id=dataset_id, image_ids=[image_id]):
            raise NotFound(f"dataset {dataset_id} has no image {image_id!r}")
    path = services.files.dataset_image(dataset_id, image_id)
    if not path.is_file():
        raise NotFound(f"image {image_id} is missing from the data dir")
    return path


def check_image_ids(session: Any, dataset_id: str, image_ids: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(image_ids))
    if not ids:
        raise InvalidRequest("image_ids must list at least one image", code="invalid_parameter")
    found = {i.id for i in repo.get_images(session, dataset_id=dataset_id, image_ids=ids)}
    if missing := [i for i in ids if i not in found]:
        raise NotFound(
            f"dataset {dataset_id} has no image(s) {', '.join(map(repr, missing[:5]))}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return ids


def present_classes(session: Any, dataset: Dataset, extra: str | None = None) -> list[str]:
    """The class list after a change: classes with images left, in their order, plus a new one."""
    counts = repo.label_counts(session, dataset_ids=[dataset.id])[dataset.id]
    names = [n for n in dataset.class_names if counts.get(n)]
    if extra is not None and extra not in names:
        names.append(extra)
    return names


def relabel_images(services: Services, dataset_id: str, image_ids: Sequence[str], label: str | None) -> dict[str, Any]:
    """Give photos a label (None = unlabelled); a new label becomes a new class.

    Raises:
        NotFound: the dataset or any image id (nothing changes then).
        InvalidRequest: an invalid or reserved label.
    """
    clean = check_label(label) if label is not None else None
    with services.db.write_session() as session:
        dataset = require_dataset(session, dataset_id, for_update=True)
        ids = check_image_ids(session, dataset_id, image_ids)
        if clean is not None:
            clean = next((n for n in dataset.class_names if label_key(n) == label_key(clean)), clean)
        updated = repo.set_labels(session, dataset_id=dataset_id, image_ids=ids, label=clean)
        version = repo.bump_version(session, dataset, present_classes(session, dataset, clean))
        return {"version": version, "updated": updated}


def delete_images(services: Services, dataset_id: str, image_ids: Sequence[str]) -> dict[str, Any]:
    """Remove photos from a dataset. Raises NotFound (the dataset or any image id; nothing changes then)."""
    with services.db.write_session() as session:
        dataset = require_dataset(session, dataset_id, for_update=True)
        ids = check_image_ids(session, dataset_id, image_ids)
        deleted = repo.delete_images(session, dataset_id=dataset_id, image_ids=ids)
        version = repo.bump_version(session, dataset, present_classes(session, dataset))
    for image_id in ids:  # after the commit: a job that took its snapshot before may still need them
        services.files.dataset_image(dataset_id, image_id).unlink(missing_ok=True)
    return {"version": version, "deleted": deleted}

"""What a job takes of a dataset: its photos and labels as they are at one version.

Training and analysis take the same snapshot; an unlabelled photo is ``label = -1`` in it, and only an
analysis keeps them (it suggests their labels); training needs at least two classes of two photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..store import datasets as repo
from .context import Services
from .errors import InvalidRequest, NotFound

UNLABELLED = -1


@dataclass(frozen=True)
class Snapshot:
    dataset_id: str
    version: int
    class_names: list[str]
    inputs: list[dict[str, Any]]  # {image_id, label (index into class_names, or -1), sha256, filename}
    counts: dict[str, int]  # labelled photos per class


def dataset_snapshot(services: Services, dataset_id: str, *, unlabelled: bool) -> Snapshot:
    """The dataset's photos at its current version: the classes that have photos, in the dataset's
    order, and every labelled photo (and with ``unlabelled``, the unlabelled ones as ``-1``).

    Raises:
        NotFound: no such dataset.
    """
    # Under the write lock: a deletion running meanwhile is either all before this read or all after it.
    with services.db.write_session() as session:
        dataset = repo.lock_dataset(session, dataset_id=dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset with id {dataset_id!r}; GET /datasets lists them")
        images, _ = repo.list_images(session, dataset_id=dataset_id)
        version, order = dataset.version, list(dataset.class_names)
    counts: dict[str, int] = {}
    for image in images:
        if image.label is not None:
            counts[image.label] = counts.get(image.label, 0) + 1
    class_names = [name for name in order if counts.get(name)]
    index = {name: i for i, name in enumerate(class_names)}
    inputs = [
        {
            "image_id": i.id,
            "label": index[i.label] if i.label is not None else UNLABELLED,
            "sha256": i.content_hash,
            "filename": i.filename,
        }
        for i in images
        if unlabelled or i.label is not None
    ]
    return Snapshot(dataset_id, version, class_names, inputs, {name: counts[name] for name in class_names})


def training_snapshot(services: Services, dataset_id: str, *, max_classes: int) -> Snapshot:
    """The labelled photos of the dataset's current version, checked for training.

    Raises:
        NotFound: no such dataset.
        InvalidRequest: fewer than 2 labelled classes (``too_few_classes``), more than ``max_classes``,
            or a class with fewer than 2 photos (``too_few_images``).
    """
    snapshot = dataset_snapshot(services, dataset_id, unlabelled=False)
    class_names, counts = snapshot.class_names, snapshot.counts
    if len(class_names) < 2:
        raise InvalidRequest(
            f"the dataset has {len(class_names)} labelled class(es); training needs at least 2", code="too_few_classes"
        )
    if len(class_names) > max_classes:
        raise InvalidRequest(
            f"the dataset has {len(class_names)} classes; at most {max_classes} (VT_MAX_CLASSES)",
            code="too_many_classes",
        )
    if small := [n for n in class_names if counts[n] < 2]:
        raise InvalidRequest(
            f"class(es) {', '.join(map(repr, small))} have fewer than 2 photos; every class needs at least 2 "
            "(one to train on and one to test with): add photos or relabel",
            code="too_few_images",
        )
    return snapshot

"""Dataset use cases: create, list, rename, delete; add photos (per class, unlabelled, archives), relabel,
remove. ``catalog`` holds the datasets and their photos' labels, ``intake`` stages and commits new photos;
the snapshot a job takes of a dataset is ``services.snapshot``."""

from __future__ import annotations

from .catalog import (
    MAX_NAME_LENGTH,
    create_dataset,
    dataset_view,
    delete_dataset,
    delete_images,
    get_dataset,
    image_file,
    image_view,
    list_datasets,
    list_images,
    relabel_images,
    rename_dataset,
)
from .intake import AddImages, ImageGroup, add_images, incoming_size, staged_photos

__all__ = [
    "MAX_NAME_LENGTH",
    "AddImages",
    "ImageGroup",
    "add_images",
    "create_dataset",
    "dataset_view",
    "delete_dataset",
    "delete_images",
    "get_dataset",
    "image_file",
    "image_view",
    "incoming_size",
    "list_datasets",
    "list_images",
    "relabel_images",
    "rename_dataset",
    "staged_photos",
]

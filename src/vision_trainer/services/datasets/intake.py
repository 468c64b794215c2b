"""New photos for a dataset: per class, unlabelled or from an archive, staged on disk, checked, then
committed in one transaction under the dataset's lock (all-or-nothing unless ``skip_invalid``)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from ...ml.errors import InvalidImageError
from ...store import datasets as repo
from ...store.files import remove_tree
from ..archives import ArchiveEntryError, ArchiveLimits, open_archive
from ..context import Services
from ..errors import Conflict, InsufficientStorage, InvalidRequest
from ..storage import check_room, forget_usage, upload_bytes
from ..uploads import (
    FileTooLarge,
    StagedImage,
    Upload,
    UploadLimits,
    check_label,
    label_key,
    refusal,
    refuse_bad_files,
    stage_image,
)
from .catalog import require_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageGroup:
    """Uploads of one class (``label``; None = unlabelled), from form field ``field``."""

    label: str | None
    uploads: Sequence[Upload]
    field: str = "files"


@dataclass(frozen=True)
class AddImages:
    """What ``POST /datasets/{id}/images`` carries: groups of files, and/or an archive of class folders."""

    groups: Sequence[ImageGroup] = ()
    archive: Upload | None = None
    skip_invalid: bool = False
    declared_bytes: int | None = None  # the request's size (Content-Length); None: the uploads' own sizes


@dataclass
class _Staged:
    label: str | None
    image: StagedImage


@dataclass
class _Batch:
    staged: list[_Staged] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


# --- images --------------------------------------------------------------------------------------


def add_images(services: Services, dataset_id: str, request: AddImages) -> dict[str, Any]:
    """Check and store photos, all or nothing (unless ``skip_invalid``; an archive's unusable entries
    are always skipped and listed). Exact duplicates of a photo already in the dataset, or sent twice,
    are not stored again and are listed in ``duplicates``.

    Returns:
        ``{version, added: [{image_id, filename, label}], duplicates: [{filename, image_id}],
        errors: [...], skipped: [...]}``.

    Raises:
        NotFound, InvalidRequest (bad labels, unusable files, bad archives), PayloadTooLarge (archive
        bombs), InsufficientStorage (disk full, or over VT_MAX_DATA_MB before anything is stored). A failed
        add leaves the dataset as it was.
    """
    groups = [
        ImageGroup(
            check_label(g.label, field=_label_field(g.field)) if g.label is not None else None, g.uploads, g.field
        )
        for g in request.groups
    ]
    with services.db.session() as session:
        require_dataset(session, dataset_id)
    if not any(g.uploads for g in groups) and request.archive is None:
        raise InvalidRequest(
            "no photos sent: send files (with label for one class), label1..N with files1..N, "
            "or an archive of class folders",
            code="no_images",
        )
    check_room(services, incoming_size(request.declared_bytes, [u for g in groups for u in g.uploads], request.archive))
    with _staging(services, dataset_id) as staging:
        batch = _stage(services, groups, request.archive, staging)
        if batch.errors and not request.skip_invalid:
            refuse_bad_files(batch.errors)
        if not batch.staged:
            raise InvalidRequest(
                "none of the files is a usable image", code="invalid_image", errors=batch.errors + batch.skipped or None
            )
        try:
            return _commit(services, dataset_id, batch)
        finally:
            forget_usage(services)


def incoming_size(declared_bytes: int | None, uploads: Sequence[Upload], archive: Upload | None) -> int:
    """An upload's size for the VT_MAX_DATA_MB check: the request's declared size, else its files' sizes."""
    return declared_bytes if declared_bytes is not None else upload_bytes([*uploads, archive])


@contextmanager
def staged_photos(services: Services, request: AddImages) -> Iterator[list[_Staged]]:
    """Check and stage labelled photos in a private folder for a use that does not keep them (comparing
    models); the folder goes when the block ends. Raises as ``add_images``."""
    groups = [
        ImageGroup(
            check_label(g.label, field=_label_field(g.field)) if g.label is not None else None, g.uploads, g.field
        )
        for g in request.groups
    ]
    folder = services.files.inside("tmp")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".compare-", dir=folder))
    try:
        batch = _stage(services, groups, request.archive, staging, check_space=False)
        if batch.errors and not request.skip_invalid:
            refuse_bad_files(batch.errors)
        yield batch.staged
    finally:
        remove_tree(staging)


def _label_field(files_field: str) -> str:
    return files_field.replace("files", "label", 1) if files_field.startswith("files") else "label"


@contextmanager
def _staging(services: Services, dataset_id: str) -> Iterator[Path]:
    staging = services.files.dataset_staging(dataset_id)
    try:
        yield staging
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the data dir is full; free space and retry", code="storage_full") from None
        raise
    finally:
        remove_tree(staging)


def _limits(services: Services) -> UploadLimits:
    return UploadLimits(max_file_bytes=services.settings.max_file_bytes, max_pixels=services.settings.max_image_pixels)


def _stage(
    services: Services,
    groups: Sequence[ImageGroup],
    archive: Upload | None,
    staging: Path,
    *,
    check_space: bool = True,
) -> _Batch:
    batch = _Batch()
    limits = _limits(services)
    for group in groups:
        for index, upload in enumerate(group.uploads):
            try:
                batch.staged.append(_Staged(group.label, stage_image(upload.stream, upload.filename, staging, limits)))
            except (InvalidImageError, FileTooLarge) as exc:
                batch.errors.append(refusal(exc, upload.filename, field=group.field, index=index))
    if archive is not None:
        _stage_archive(services, archive, staging, batch, check_space=check_space)
    return batch


def _stage_archive(services: Services, archive: Upload, staging: Path, batch: _Batch, *, check_space: bool) -> None:
    settings = services.settings
    path = staging / "archive.upload"
    with path.open("wb") as out:
        shutil.copyfileobj(archive.stream, out, 1 << 20)
    limits = ArchiveLimits(
        max_entries=settings.max_archive_entries,
        max_total_bytes=settings.max_archive_bytes,
        max_ratio=settings.max_archive_ratio,
    )
    with open_archive(path, limits) as (members, skipped):
        if check_space:  # what the archive unpacks to is what will be stored, not its packed size
            check_room(services, sum(member.size for member in members))
        batch.skipped += skipped
        labels: dict[str, str] = {}
        for index, member in enumerate(members):
            try:
                label = labels.get(member.label) or labels.setdefault(
                    member.label, check_label(member.label, field=f"folder {member.label!r}")
                )
            except InvalidRequest as exc:
                batch.skipped.append({"filename": member.name, "code": exc.code, "detail": exc.detail})
                continue
            try:
                with member.open() as stream:
                    batch.staged.append(_Staged(label, stage_image(stream, member.name, staging, _limits(services))))
            except (InvalidImageError, FileTooLarge) as exc:  # an archive's junk is skipped, never fatal
                batch.skipped.append(refusal(exc, member.name, field="archive", index=index))
            except ArchiveEntryError as exc:
                batch.skipped.append(
                    {"field": "archive", "index": index, "filename": member.name, "code": exc.code, "detail": str(exc)}
                )
    path.unlink(missing_ok=True)


def _commit(services: Services, dataset_id: str, batch: _Batch) -> dict[str, Any]:
    """Move the staged files into the dataset and write their rows and the new version in one transaction."""
    target = services.files.dataset_dir(dataset_id)
    target.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    try:
        with services.db.write_session() as session:
            dataset = require_dataset(session, dataset_id, for_update=True)
            known = repo.hashes(session, dataset_id=dataset_id, content_hashes=[s.image.sha256 for s in batch.staged])
            classes = {label_key(name): name for name in dataset.class_names}
            class_names = list(dataset.class_names)
            rows, added, duplicates = [], [], []
            for item in batch.staged:
                if item.image.sha256 in known:
                    duplicates.append({"filename": item.image.filename, "image_id": known[item.image.sha256]})
                    continue
                label = item.label
                if label is not None:
                    label = classes.setdefault(label_key(label), label)  # "Cat" joins an existing "cat"
                    if label not in class_names:
                        class_names.append(label)
                image_id = uuid.uuid4().hex
                known[item.image.sha256] = image_id
                path = services.files.dataset_image(dataset_id, image_id)
                os.replace(item.image.path, path)
                moved.append(path)
                rows.append(
                    {
                        "id": image_id,
                        "dataset_id": dataset_id,
                        "label": label,
                        "filename": item.image.filename[:255],
                        "content_hash": item.image.sha256,
                        "width": item.image.width,
                        "height": item.image.height,
                        "size_bytes": item.image.size,
                    }
                )
                added.append({"image_id": image_id, "filename": item.image.filename, "label": label})
            repo.add_images(session, rows)
            version = repo.bump_version(session, dataset, class_names) if rows else dataset.version
    except IntegrityError:
        _unlink(moved)
        raise Conflict(
            "the dataset changed while these photos were added; send them again", code="dataset_changed"
        ) from None
    except BaseException:
        _unlink(moved)
        raise
    return {
        "dataset_id": dataset_id,
        "version": version,
        "added": added,
        "duplicates": duplicates,
        "errors": batch.errors,
        "skipped": batch.skipped,
    }


def _unlink(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)

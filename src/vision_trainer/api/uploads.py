"""The upload forms several routes share: classes as ``label1..N`` + ``files1..N`` or ``label`` +
``files``, an ``archive`` of class folders, the field check of ``POST /train``, and the VT_MAX_DATA_MB
check that runs before a body is read."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from ..services import storage
from ..services.context import Services
from ..services.datasets import ImageGroup
from ..services.errors import InvalidRequest
from ..services.uploads import Upload
from .form_fields import check_field_names
from .schemas import TrainForm

_CLASS_FIELD = re.compile(r"^(label|files)([0-9]+)$")

# POST /train: label1..labelN with files1..filesN, the options, and an archive of class folders.
TRAIN_NUMBERED_FIELDS = ("label", "files")
TRAIN_EXTRA_FIELDS = ("archive",)

ARCHIVE_PROP: dict[str, Any] = {
    "type": "string",
    "format": "binary",
    "description": "A zip, tar or tar.gz of class folders (cats/1.jpg, dogs/2.jpg), instead of "
    "labelN/filesN; hidden files, files outside a class folder and non-images are skipped and listed.",
}


def check_train_fields(form: FormData) -> None:
    """The field check of ``POST /train``: ``label1..N``, ``files1..N``, ``archive`` and every field of
    ``TrainForm``. Call it on the parsed form before reading anything else from it.

    Raises:
        InvalidRequest: ``unknown_field``.
    """
    check_field_names(
        form.keys(), allowed=[*TrainForm.model_fields, *TRAIN_EXTRA_FIELDS], numbered=TRAIN_NUMBERED_FIELDS
    )


def has_class_fields(form: FormData) -> bool:
    return any(_CLASS_FIELD.match(key) for key in form.keys())


def parse_classes(form: FormData) -> tuple[list[str], list[list[Upload]]]:
    """``label1..labelN`` and ``files1..filesN`` from the form, checked to be numbered 1..N without gaps."""
    numbers: set[int] = set()
    for key in form.keys():
        match = _CLASS_FIELD.match(key)
        if match:
            numbers.add(int(match.group(2)))
    expected = set(range(1, len(numbers) + 1))
    if numbers != expected:
        raise InvalidRequest(
            f"class fields must be numbered 1..N without gaps; got numbers {sorted(numbers)}",
            code="invalid_class_fields",
        )
    labels: list[str] = []
    files: list[list[Upload]] = []
    for n in sorted(numbers):
        label = form.getlist(f"label{n}")
        if len(label) != 1 or not isinstance(label[0], str):
            raise InvalidRequest(f"label{n} must be given once, as text", code="missing_label")
        uploads = form.getlist(f"files{n}")
        if any(not isinstance(u, UploadFile) for u in uploads):
            raise InvalidRequest(f"files{n} must be file uploads", code="invalid_class_fields")
        labels.append(label[0])
        files.append([Upload(filename=u.filename or "", stream=u.file) for u in uploads])  # type: ignore[union-attr]
    return labels, files


def parse_archive(form: FormData) -> Upload | None:
    """The optional ``archive`` upload (zip, tar, tar.gz of class folders)."""
    values = form.getlist("archive")
    if not values:
        return None
    if len(values) != 1 or not isinstance(values[0], UploadFile):
        raise InvalidRequest(
            "archive must be one file upload (zip, tar or tar.gz of class folders)", code="invalid_class_fields"
        )
    return Upload(filename=values[0].filename or "", stream=values[0].file)


def image_groups(form: FormData) -> list[ImageGroup]:
    """The photos of a form by class: ``label1..N`` + ``files1..N``, and ``label`` (optional) + ``files``."""
    groups: list[ImageGroup] = []
    if any(key[:5] in ("label", "files") and key[5:].isdigit() for key in form.keys()):
        labels, files = parse_classes(form)
        groups += [ImageGroup(label, uploads, f"files{n}") for n, (label, uploads) in enumerate(zip(labels, files), 1)]
    given = form.getlist("label")
    if len(given) > 1 or any(not isinstance(v, str) for v in given):
        raise InvalidRequest("label must be given at most once, as text", code="missing_label")
    uploads = form.getlist("files")
    if any(not isinstance(u, UploadFile) for u in uploads):
        raise InvalidRequest("files must be file uploads", code="invalid_class_fields")
    if given and not uploads:
        raise InvalidRequest(
            "label names the class of files: send the photos as files (an archive brings its own class folders)",
            code="invalid_class_fields",
        )
    if uploads:
        label = str(given[0]) if given else None
        groups.append(ImageGroup(label, [Upload(u.filename or "", u.file) for u in uploads], "files"))  # type: ignore[union-attr]
    return groups


def declared_bytes(request: Request) -> int | None:
    """The request's Content-Length, when it sent a usable one."""
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def check_upload_room(request: Request, services: Services) -> int | None:
    """Refuse (507 ``storage_full``) before the body is read when the stored data is, or with this request
    would be, over VT_MAX_DATA_MB. Returns the declared size for the service, which checks again."""
    declared = declared_bytes(request)
    await run_in_threadpool(storage.check_room, services, declared)
    return declared

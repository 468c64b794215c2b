"""Checking a training upload: labels, per-class images, and storing the files under generated names."""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..ml.errors import InvalidImageError
from ..ml.images import open_image
from .errors import InvalidRequest

RESERVED_LABEL = "unknown"
MAX_LABEL_LENGTH = 64
_CHUNK = 1 << 20
VALIDATION_DRAFT_SIZE = 32


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the client's name (metadata only) and an open binary stream."""

    filename: str
    stream: BinaryIO


def check_labels(labels: Sequence[str], *, max_classes: int) -> list[str]:
    """Trim and validate class labels, keeping their order.

    Raises:
        InvalidRequest: fewer than 2 or more than ``max_classes`` classes, an empty, reserved,
            over-long or duplicate (case-insensitive) label, or one with control characters or
            path separators.
    """
    if len(labels) < 2:
        raise InvalidRequest(
            f"at least 2 classes are needed, got {len(labels)}: send label1/files1 and label2/files2",
            code="too_few_classes",
        )
    if len(labels) > max_classes:
        raise InvalidRequest(f"at most {max_classes} classes, got {len(labels)}", code="too_many_classes")
    cleaned: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(labels, start=1):
        label = raw.strip()
        field = f"label{number}"
        if not label:
            raise InvalidRequest(f"{field} is empty: every class needs a name", code="empty_label")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidRequest(
                f"{field} is {len(label)} characters long; at most {MAX_LABEL_LENGTH}", code="invalid_label"
            )
        if (
            any(unicodedata.category(ch).startswith("C") for ch in label)
            or "/" in label
            or "\\" in label
            or not label.strip(".")
        ):
            raise InvalidRequest(
                f"{field} {label!r} contains control characters or path separators, or is only dots",
                code="invalid_label",
            )
        if label.casefold() == RESERVED_LABEL:
            raise InvalidRequest(
                f"{field}: the label {RESERVED_LABEL!r} is reserved (it is what predictions below "
                "min_confidence answer); choose another name",
                code="reserved_label",
            )
        key = label.casefold()
        if key in seen:
            raise InvalidRequest(
                f"{field} {label!r} repeats label{seen[key]} (labels are compared ignoring case)",
                code="duplicate_label",
            )
        seen[key] = number
        cleaned.append(label)
    return cleaned


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_pixels: int


class FileTooLarge(Exception):
    pass


def store_uploads(
    files: Sequence[Sequence[Upload]], staging: Path, limits: UploadLimits
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Copy every upload into ``staging/<class index>/<generated name>`` and check it decodes.

    The client's filename is kept as metadata only. A file that is too large, not an allowed format,
    too many pixels or corrupt is not kept and gets an error entry instead.

    Returns:
        ``(inputs, errors)``: one ``{label, file, filename, sha256}`` per stored image (``file``
        relative to ``staging``) and one ``{field, index, filename, code, detail}`` per refused file.

    Raises:
        InvalidRequest: a class has fewer than 2 files (``too_few_images``).
    """
    for number, uploads in enumerate(files, start=1):
        if len(uploads) < 2:
            raise InvalidRequest(
                f"files{number} has {len(uploads)} image(s); every class needs at least 2 "
                "(one to train on and one to test with)",
                code="too_few_images",
            )
    inputs: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for label, uploads in enumerate(files):
        folder = staging / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for index, upload in enumerate(uploads):
            path = folder / f"{uuid.uuid4().hex}.img"
            try:
                digest = _copy_hashing(upload.stream, path, limits.max_file_bytes)
                # A reduced-size JPEG decode still reads every byte, so truncation is caught, at a third the cost.
                open_image(path, max_pixels=limits.max_pixels, draft_size=VALIDATION_DRAFT_SIZE)
            except (InvalidImageError, FileTooLarge) as exc:
                path.unlink(missing_ok=True)
                code = exc.code if isinstance(exc, InvalidImageError) else "file_too_large"
                errors.append({"field": f"files{label + 1}", "index": index, "filename": upload.filename,
                               "code": code, "detail": f"{upload.filename!r}: {exc}"})
                continue
            inputs.append(
                {"label": label, "file": f"{label}/{path.name}", "filename": upload.filename, "sha256": digest}
            )
    return inputs, errors


def refuse_bad_files(errors: list[dict[str, Any]]) -> None:
    """Raise the 422 ``invalid_image`` that lists every refused file."""
    names = ", ".join(f"{e['field']}[{e['index']}] {e['filename']!r}" for e in errors[:5])
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    raise InvalidRequest(
        f"{len(errors)} file(s) are not usable images: {names}{more}; fix or remove them, or send "
        "skip_invalid=true to train on the rest",
        code="invalid_image",
        errors=errors,
    )


def check_class_sizes(inputs: list[dict[str, Any]], num_classes: int) -> None:
    """Every class needs at least 2 distinct usable images. Raises InvalidRequest (``too_few_images``)."""
    for label in range(num_classes):
        unique = {i["sha256"] for i in inputs if i["label"] == label}
        if len(unique) < 2:
            raise InvalidRequest(
                f"files{label + 1} has {len(unique)} distinct usable image(s) after removing exact duplicates "
                "and refused files; every class needs at least 2",
                code="too_few_images",
            )


def _copy_hashing(stream: BinaryIO, path: Path, max_bytes: int) -> str:
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise FileTooLarge(f"file is larger than {max_bytes / 2**20:g} MiB (VT_MAX_FILE_MB)")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


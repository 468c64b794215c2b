"""Checking uploads: class labels, and images written under generated names and checked to decode."""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from PIL import Image

from ..ml.errors import InvalidImageError, UnsupportedFormatError
from ..ml.images import open_image
from .archives import archive_kind
from .errors import InvalidRequest

RESERVED_LABEL = "unknown"
MAX_LABEL_LENGTH = 64
_CHUNK = 1 << 20
VALIDATION_DRAFT_SIZE = 32
_ORIENTATION = 0x0112


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
        label = check_label(raw, field=f"label{number}")
        key = label_key(label)
        if key in seen:
            raise InvalidRequest(
                f"label{number} {label!r} repeats label{seen[key]} (labels are compared ignoring case)",
                code="duplicate_label",
            )
        seen[key] = number
        cleaned.append(label)
    return cleaned


def label_key(label: str) -> str:
    """What two labels must differ in to be two classes: compatibility forms (fullwidth ``ｕｎｋｎｏｗｎ``,
    ligatures) and case are folded."""
    return unicodedata.normalize("NFKC", label).casefold()


def check_label(raw: str, *, field: str = "label") -> str:
    """One class label, trimmed. Raises InvalidRequest (empty, too long, control characters or path
    separators, only dots, or the reserved ``unknown``)."""
    # One spelling per name: "café" typed (NFC) and "café" from a Mac's file names (NFD) are one class.
    label = unicodedata.normalize("NFC", raw).strip()
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
    if label_key(label) == RESERVED_LABEL:
        raise InvalidRequest(
            f"{field}: the label {RESERVED_LABEL!r} is reserved (it is what predictions below "
            "min_confidence answer); choose another name",
            code="reserved_label",
        )
    return label


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_pixels: int


class FileTooLarge(Exception):
    pass


@dataclass(frozen=True)
class StagedImage:
    """An uploaded image checked and written under a generated name; ``filename`` is the client's."""

    path: Path
    filename: str
    sha256: str
    width: int
    height: int
    size: int


def stage_image(stream: IO[bytes], filename: str, folder: Path, limits: UploadLimits) -> StagedImage:
    """Copy one upload into ``folder`` under a generated name, hashing it, and check it decodes.

    Raises:
        InvalidImageError: not an allowed format, too many pixels, or corrupt (nothing is kept).
        FileTooLarge: over ``limits.max_file_bytes`` (nothing is kept).
    """
    path = folder / f"{uuid.uuid4().hex}.img"
    try:
        digest, size = _copy_hashing(stream, path, limits.max_file_bytes)
        # A reduced-size JPEG decode still reads every byte, so truncation is caught, at a third the cost.
        try:
            open_image(path, max_pixels=limits.max_pixels, draft_size=VALIDATION_DRAFT_SIZE)
        except UnsupportedFormatError:
            with path.open("rb") as head:
                kind = archive_kind(head.read(512))
            if kind is None:
                raise
            raise UnsupportedFormatError(
                f"this is a {kind} archive, not an image: send archives of class folders in the `archive` field"
            ) from None
        width, height = _displayed_size(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StagedImage(path=path, filename=filename, sha256=digest, width=width, height=height, size=size)


def refusal(exc: Exception, filename: str, **where: Any) -> dict[str, Any]:
    """The ``errors`` entry of a refused file."""
    code = exc.code if isinstance(exc, InvalidImageError) else "file_too_large"
    return {**where, "filename": filename, "code": code, "detail": f"{filename!r}: {exc}"}


def _displayed_size(path: Path) -> tuple[int, int]:
    """Width and height as shown (EXIF rotation applied), read from the header alone."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(_ORIENTATION) in (5, 6, 7, 8):
            width, height = height, width
    return width, height


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


def _copy_hashing(stream: IO[bytes], path: Path, max_bytes: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise FileTooLarge(f"file is larger than {max_bytes / 2**20:g} MiB (VT_MAX_FILE_MB)")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size

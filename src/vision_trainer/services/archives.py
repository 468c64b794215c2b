"""Reading uploaded archives (zip, tar, tar.gz) of class folders safely.

No name from inside an archive is ever used as a path: members are read as streams and written under
generated names. Hidden entries, entries outside a class folder, links and anything that is not a
regular file are skipped and listed; entry count, total size and compression ratio are bounded before
anything is extracted, and the sizes are counted again while reading, since headers can lie.
"""

from __future__ import annotations

import gzip
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import InvalidRequest, PayloadTooLarge

HIDDEN_FOLDERS = {"__MACOSX", "__pycache__"}
LAYOUT = "one folder per class with the photos inside (cats/1.jpg, dogs/2.jpg), optionally inside one wrapping folder"


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_total_bytes: int
    max_ratio: float


@dataclass(frozen=True)
class ArchiveMember:
    """A regular file of a class folder: its class (the folder's name), its name in the archive
    (metadata only) and how to read it."""

    label: str
    name: str
    size: int
    open: Callable[[], IO[bytes]]


@dataclass
class _Entry:
    name: str
    size: int
    compressed: int
    is_file: bool
    is_link: bool
    handle: Any


def archive_kind(head: bytes) -> str | None:
    """``zip``, ``tar`` or None, from the first bytes of a file."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "tar"
    return None


@contextmanager
def open_archive(path: Path, limits: ArchiveLimits) -> Iterator[tuple[list[ArchiveMember], list[dict[str, Any]]]]:
    """The class-folder members of an archive and the entries skipped, with why.

    Raises:
        InvalidRequest: not a zip/tar archive, corrupt (``invalid_archive``), or no class folder in it
            (``invalid_archive_layout``, saying what layout is expected).
        PayloadTooLarge: too many entries, too large uncompressed, or compressed too well
            (``archive_too_large``: a zip bomb).
    """
    with path.open("rb") as handle:
        kind = archive_kind(handle.read(512))
    if kind is None:
        raise InvalidRequest("archive must be a zip, tar or tar.gz file", code="invalid_archive")
    try:
        with _entries(path, kind) as entries:
            _check_bounds(entries, path.stat().st_size, limits)
            yield _members(entries, kind, limits)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, NotImplementedError) as exc:
        raise InvalidRequest(f"the archive is corrupt or truncated ({exc})", code="invalid_archive") from None


@contextmanager
def _entries(path: Path, kind: str) -> Iterator[list[_Entry]]:
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            yield [
                _Entry(
                    info.filename,
                    info.file_size,
                    info.compress_size,
                    not info.is_dir() and not _zip_link(info),
                    _zip_link(info),
                    (archive, info),
                )
                for info in archive.infolist()
            ]
    else:
        with tarfile.open(path, mode="r:*") as archive:
            yield [
                _Entry(info.name, info.size, info.size, info.isreg(), info.issym() or info.islnk(), (archive, info))
                for info in archive.getmembers()
            ]


def _zip_link(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _check_bounds(entries: list[_Entry], archive_bytes: int, limits: ArchiveLimits) -> None:
    if len(entries) > limits.max_entries:
        raise PayloadTooLarge(
            f"the archive has {len(entries)} entries; at most {limits.max_entries} (VT_MAX_ARCHIVE_ENTRIES)",
            code="archive_too_large",
        )
    total = sum(e.size for e in entries if e.is_file)
    if total > limits.max_total_bytes:
        raise PayloadTooLarge(
            f"the archive unpacks to {total / 2**20:.0f} MiB; at most {limits.max_total_bytes / 2**20:g} MiB "
            "(VT_MAX_ARCHIVE_MB)",
            code="archive_too_large",
        )
    if total > limits.max_ratio * max(archive_bytes, 1) and total > (1 << 20):
        raise PayloadTooLarge(
            f"the archive unpacks to {total / max(archive_bytes, 1):.0f} times its size (at most "
            f"{limits.max_ratio:g}, VT_MAX_ARCHIVE_RATIO): photos barely compress, so this looks like a zip bomb",
            code="archive_too_large",
        )


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _skip_reason(entry: _Entry, parts: list[str]) -> str | None:
    if entry.is_link:
        return "a link, not a file"
    if not entry.is_file:
        return "not a regular file"
    if not parts or ".." in parts or entry.name.startswith("/"):
        return "an unsafe path"
    if any(p.startswith(".") or p in HIDDEN_FOLDERS for p in parts):
        return "a hidden file (system or editor metadata)"
    return None


def _members(
    entries: list[_Entry], kind: str, limits: ArchiveLimits
) -> tuple[list[ArchiveMember], list[dict[str, Any]]]:
    skipped: list[dict[str, Any]] = []
    kept: list[tuple[list[str], _Entry]] = []
    for entry in entries:
        parts = _parts(entry.name)
        reason = _skip_reason(entry, parts)
        if reason is None:
            kept.append((parts, entry))
        elif entry.is_file or entry.is_link:
            skipped.append({"filename": entry.name, "code": "skipped_entry", "detail": f"{entry.name!r}: {reason}"})
    # A single folder around everything (photos.zip -> photos/cats/..., photos/dogs/...) is unwrapped.
    tops = {parts[0] for parts, _ in kept}
    if len(tops) == 1 and any(len(parts) >= 3 for parts, _ in kept):
        kept = [(parts[1:], entry) for parts, entry in kept]
    members = []
    for parts, entry in kept:
        if len(parts) < 2:
            skipped.append(
                {
                    "filename": entry.name,
                    "code": "outside_class_folder",
                    "detail": f"{entry.name!r} is not inside a class folder",
                }
            )
            continue
        members.append(
            ArchiveMember(label=parts[0], name=entry.name, size=entry.size, open=_opener(kind, entry.handle))
        )
    if not members:
        raise InvalidRequest(
            f"the archive has no photos in class folders; expected {LAYOUT}",
            code="invalid_archive_layout",
            errors=skipped or None,
        )
    return members, skipped


def _opener(kind: str, handle: Any) -> Callable[[], IO[bytes]]:
    archive, info = handle
    if kind == "zip":
        return lambda: archive.open(info)

    def open_tar_member() -> IO[bytes]:
        stream = archive.extractfile(info)
        if stream is None:
            raise InvalidRequest(f"{info.name!r} cannot be read", code="invalid_archive")
        return stream

    return open_tar_member

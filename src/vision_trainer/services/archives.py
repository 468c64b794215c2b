"""Reading uploaded archives (zip, tar, tar.gz) of class folders safely.

No name from inside an archive is ever used as a path: members are read as streams and written under
generated names. Hidden entries, entries outside a class folder, links, encrypted entries and anything
that is not a regular file are skipped and listed; entry count, total size and compression ratio are
bounded before anything is extracted (while the archive is walked, never after), and a member never
yields more than its declared size. Tar headers are parsed in a resource-limited child process.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from .errors import InvalidRequest, PayloadTooLarge
from .sandbox import SandboxFailed, SandboxLimits, run_script

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
    (metadata only) and how to read it (a stream whose read errors are ``ArchiveEntryError``)."""

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
    unreadable: str | None = None  # why the entry cannot be read (encrypted, unknown compression)


class ArchiveEntryError(Exception):
    """One entry of the archive cannot be read (corrupt compressed data, bad CRC); the others can."""

    code = "invalid_archive_entry"


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

    Counts and sizes are checked while the archive is walked: a zip's entry count is read from its
    end record before its directory is parsed; a tar.gz is unpacked next to it under the size and
    ratio bounds, and its headers are parsed in a resource-limited child process (see
    ``tar_listing``) that stops at the entry bound.

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
        with _entries(path, kind, limits) as entries:
            _check_bounds(entries, path.stat().st_size, limits)
            yield _members(entries, kind, limits)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        tarfile.TarError,
        EOFError,
        gzip.BadGzipFile,
        zlib.error,
        NotImplementedError,
        struct.error,
        ValueError,
    ) as exc:
        raise InvalidRequest(f"the archive is corrupt or truncated ({exc})", code="invalid_archive") from None


@contextmanager
def _entries(path: Path, kind: str, limits: ArchiveLimits) -> Iterator[list[_Entry]]:
    if kind == "zip":
        _check_zip_count(path, limits)
        with zipfile.ZipFile(path) as archive:
            yield [_zip_entry(archive, info) for info in archive.infolist()]
        return
    plain = _plain_tar(path, limits)
    try:
        listed = _list_tar(plain, limits)
        with plain.open("rb") as handle:
            yield [
                _Entry(name, size, size, kind_ == "file", kind_ == "link", (handle, offset, size))
                for name, kind_, size, offset in listed
            ]
    finally:
        if plain != path:
            plain.unlink(missing_ok=True)


def _too_many(count: int | str, limits: ArchiveLimits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the archive has {count} entries; at most {limits.max_entries} (VT_MAX_ARCHIVE_ENTRIES)",
        code="archive_too_large",
    )


def _check_zip_count(path: Path, limits: ArchiveLimits) -> None:
    """Refuse a zip with too many entries from its end record, before its directory is read."""
    with path.open("rb") as handle:
        end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]  # stable since Python 2
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    count = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    if count > limits.max_entries:
        raise _too_many(count, limits)


def _zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Entry:
    link = _zip_link(info)
    entry = _Entry(info.filename, info.file_size, info.compress_size, not info.is_dir() and not link, link, None)
    if info.flag_bits & 0x1:
        entry.unreadable = "encrypted"
    elif info.compress_type not in _ZIP_METHODS:
        entry.unreadable = f"compressed with a method this server does not read ({info.compress_type})"
    entry.handle = (archive, info)
    return entry


_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
TAR_HEADER_BYTES = 16 << 10  # long paths fit; a quadratic regex over it costs well under a second
TAR_SANDBOX = SandboxLimits(cpu_seconds=10, memory_bytes=512 << 20, wall_seconds=60)
_TAR_SCRIPT = Path(__file__).resolve().with_name("tar_listing.py")


def _plain_tar(path: Path, limits: ArchiveLimits) -> Path:
    """The archive itself when it is a plain tar; else it is gunzipped beside it, stopping as soon as the
    output passes the size or ratio bound."""
    with path.open("rb") as head:
        if head.read(2) != b"\x1f\x8b":
            return path
    packed = max(path.stat().st_size, 1)
    # Headers and padding add up to 1.5 KiB per entry beyond the files' own sizes.
    bound = min(limits.max_total_bytes, max(int(limits.max_ratio * packed), 1 << 20)) + limits.max_entries * 1536
    target = path.with_name(path.name + ".tar")
    written = 0
    try:
        with gzip.open(path, "rb") as source, target.open("wb") as out:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > bound:
                    raise PayloadTooLarge(
                        f"the archive unpacks to more than {bound / 2**20:.0f} MiB (VT_MAX_ARCHIVE_MB, or "
                        f"{limits.max_ratio:g} times its size, VT_MAX_ARCHIVE_RATIO): this looks like a bomb",
                        code="archive_too_large",
                    )
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def _list_tar(path: Path, limits: ArchiveLimits) -> list[tuple[str, str, int, int]]:
    try:
        output = run_script(_TAR_SCRIPT, [str(path), str(limits.max_entries), str(TAR_HEADER_BYTES)], TAR_SANDBOX)
        answer = json.loads(output)
    except SandboxFailed as exc:
        raise InvalidRequest(
            f"the archive's headers could not be read within the server's limits ({exc})", code="invalid_archive"
        ) from None
    if answer.get("error") == "too_many_entries":
        raise _too_many(f"more than {limits.max_entries}", limits)
    if "error" in answer:
        raise InvalidRequest(f"the archive is corrupt or truncated ({answer['detail']})", code="invalid_archive")
    return [(str(name), str(kind), int(size), int(offset)) for name, kind, size, offset in answer["entries"]]


def _zip_link(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _check_bounds(entries: list[_Entry], archive_bytes: int, limits: ArchiveLimits) -> None:
    if len(entries) > limits.max_entries:
        raise _too_many(len(entries), limits)
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


def _unsafe_part(part: str) -> bool:
    """Drive letters (``C:``), alternate data streams (``x:y``) and control characters never name a class or file."""
    return ":" in part or any(ord(ch) < 32 for ch in part)


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _skip_reason(entry: _Entry, parts: list[str]) -> str | None:
    if entry.is_link:
        return "a link, not a file"
    if not entry.is_file:
        return "not a regular file"
    if not parts or ".." in parts or entry.name.startswith(("/", "\\")) or any(_unsafe_part(p) for p in parts):
        return "an unsafe path"
    if entry.unreadable:
        return entry.unreadable
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
    if kind == "zip":
        archive, info = handle

        def open_zip_member() -> IO[bytes]:
            try:
                return cast(IO[bytes], _GuardedStream(archive.open(info)))
            except _ENTRY_ERRORS as exc:
                raise ArchiveEntryError(f"the entry cannot be read ({type(exc).__name__}: {exc})") from None

        return open_zip_member
    tar, offset, size = handle
    return lambda: cast(IO[bytes], _GuardedStream(_Slice(tar, offset, size)))


class _Slice(io.RawIOBase):
    """``size`` bytes of an open file from ``offset``: a tar member's data, read without tarfile."""

    def __init__(self, handle: IO[bytes], offset: int, size: int) -> None:
        self._handle, self._position, self._left = handle, offset, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._left)
        if count <= 0:
            return 0
        self._handle.seek(self._position)
        data = self._handle.read(count)
        if not data:
            raise EOFError("the archive ends inside an entry")
        buffer[: len(data)] = data
        self._position += len(data)
        self._left -= len(data)
        return len(data)


class _GuardedStream(io.RawIOBase):
    """A member's stream whose decoding errors (bad deflate/bzip2/lzma data, CRC mismatch, truncation)
    become ``ArchiveEntryError``, so one bad entry is skipped instead of failing the request."""

    def __init__(self, inner: IO[bytes] | io.RawIOBase) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size) or b""
        except _ENTRY_ERRORS as exc:
            raise ArchiveEntryError(f"the entry is corrupt ({type(exc).__name__}: {exc})") from None

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


_ENTRY_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,  # bz2 reports corrupt data as OSError("Invalid data stream")
    RuntimeError,
    ValueError,
    NotImplementedError,
)

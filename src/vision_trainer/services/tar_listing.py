"""List the entries of an uncompressed tar file; run as a script in a resource-limited child process.

Tar headers are parsed by CPython's ``tarfile``, whose cost cannot be bounded from outside (its pax
header regex is quadratic on crafted input in some Python versions), so the server never parses them
itself: ``services.sandbox`` runs this file with ``python -I -S`` under CPU-time and address-space
limits. Only the standard library is used, so the child starts in milliseconds.

Bounds applied while walking, never after: at most ``max_entries`` headers are read; a GNU long-name
or long-link block, or a pax header, larger than ``max_header_bytes`` is refused before it is read; pax
records are checked to be well formed (decimal length, ``key=value``, newline) before ``tarfile`` sees
them. Output, on stdout, one JSON document: ``{"entries": [[name, kind, size, offset], ...]}`` or
``{"error": "too_many_entries" | "invalid", "detail": ...}``.
"""

from __future__ import annotations

import json
import sys
import tarfile
from typing import Any

NAME_LIMIT = 1024
_LONG_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


class Refused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def check_pax_records(data: bytes) -> None:
    """Reject anything but a sequence of ``<decimal length> <key>=<value>\\n`` records, in linear time."""
    data = data.rstrip(b"\0")
    position = 0
    while position < len(data):
        space = data.find(b" ", position, position + 21)
        digits = data[position:space]
        if space < 0 or not digits.isdigit():
            raise Refused("invalid", "a pax header record has no valid length")
        end = position + int(digits)
        record = data[space + 1 : end]
        if end > len(data) or end <= space or not record.endswith(b"\n") or b"=" not in record:
            raise Refused("invalid", "a pax header record is malformed")
        position = end


class BoundedTarInfo(tarfile.TarInfo):
    max_header_bytes = 1 << 16

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in _LONG_TYPES + _PAX_TYPES:
            if self.size > self.max_header_bytes:
                raise Refused("invalid", f"a tar header block of {self.size} bytes (at most {self.max_header_bytes})")
            if self.type in _PAX_TYPES:
                start = tarfile_.fileobj.tell()
                check_pax_records(tarfile_.fileobj.read(self.size))
                tarfile_.fileobj.seek(start)
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _kind(info: tarfile.TarInfo) -> str:
    if info.issym() or info.islnk():
        return "link"
    if info.isdir():
        return "dir"
    if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
        return "file"
    return "other"  # devices, fifos, sparse files (their data is not one contiguous run)


def list_entries(path: str, max_entries: int) -> list[list[Any]]:
    entries: list[list[Any]] = []
    with tarfile.open(path, mode="r:", tarinfo=BoundedTarInfo) as archive:
        while (info := archive.next()) is not None:
            if len(entries) >= max_entries:
                raise Refused("too_many_entries", f"more than {max_entries} entries")
            name = info.name if len(info.name) <= NAME_LIMIT else "\0too-long"
            entries.append([name, _kind(info), info.size, info.offset_data])
            archive.members.clear()  # type: ignore[attr-defined]  # nothing is kept but what is written out
    return entries


def main(argv: list[str]) -> int:
    path, max_entries, max_header = argv[1], int(argv[2]), int(argv[3])
    BoundedTarInfo.max_header_bytes = max_header
    try:
        result: dict[str, Any] = {"entries": list_entries(path, max_entries)}
    except Refused as exc:
        result = {"error": exc.code, "detail": str(exc)}
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        result = {"error": "invalid", "detail": f"{type(exc).__name__}: {exc}"[:300]}
    json.dump(result, sys.stdout, ensure_ascii=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

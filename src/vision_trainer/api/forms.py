"""Multipart forms: refuse field names an endpoint does not know, and stream large files to disk.

A misspelt field (``epoch`` for ``epochs``, ``file1`` for ``files1``) used to be ignored silently, so
the request ran with a default nobody asked for. Every form endpoint now answers 422 ``unknown_field``
naming each unknown field and the closest valid name.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Request
from starlette.datastructures import FormData

from ..services.errors import InvalidRequest, PayloadTooLarge, ServiceError

_TRAILING_NUMBER = re.compile(r"([0-9]+)$")
_MAX_NAMED = 10
_MAX_NAME_CHARS = 64

# POST /train: label1..labelN with files1..filesN, the options, and an archive of class folders.
TRAIN_NUMBERED_FIELDS = ("label", "files")
TRAIN_EXTRA_FIELDS = ("archive",)


FILES_PROP: dict[str, Any] = {"type": "array", "items": {"type": "string", "format": "binary"}}


def multipart_form(
    properties: dict[str, Any],
    *,
    required_fields: tuple[str, ...] = (),
    required: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` describing the multipart form of a route that reads its form itself (to stream
    the files and check the field names), so the API docs still show its fields."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required_fields:
        schema["required"] = list(required_fields)
    if description:
        schema["description"] = description
    return {"requestBody": {"required": required, "content": {"multipart/form-data": {"schema": schema}}}}


def _shown(name: str) -> str:
    return repr(name if len(name) <= _MAX_NAME_CHARS else name[:_MAX_NAME_CHARS] + "…")


def _is_numbered(name: str, prefixes: Iterable[str]) -> bool:
    return any(name.startswith(p) and name[len(p) :].isdigit() and name[len(p) :].isascii() for p in prefixes)


def closest_field(name: str, allowed: Collection[str], numbered: Collection[str] = ()) -> str | None:
    """The valid field name most like ``name`` (difflib), or None when nothing is close.

    Numbered fields are offered with ``name``'s own trailing number (``file2`` -> ``files2``), or 1.
    """
    match = _TRAILING_NUMBER.search(name)
    number = match.group(1) if match else "1"
    candidates = [*allowed, *(f"{prefix}{number}" for prefix in numbered)]
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not found:  # 'Epochs', 'MODEL_ID': letter case alone
        found = difflib.get_close_matches(name.lower(), candidates, n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_fields_message(unknown: list[str], allowed: Collection[str], numbered: Collection[str] = ()) -> str:
    """``unknown field 'epoch'; did you mean 'epochs'?`` (and the valid names when one has no close match)."""
    hints = [(name, closest_field(name, allowed, numbered)) for name in unknown[:_MAX_NAMED]]
    valid = ", ".join([*allowed, *(f"{p}1..{p}N" for p in numbered)])
    if len(unknown) == 1 and hints[0][1]:
        return f"unknown field {_shown(unknown[0])}; did you mean {hints[0][1]!r}?"
    listed = ", ".join(_shown(name) + (f" (did you mean {hint!r}?)" if hint else "") for name, hint in hints)
    more = f" and {len(unknown) - _MAX_NAMED} more" if len(unknown) > _MAX_NAMED else ""
    noun = "field" if len(unknown) == 1 else "fields"
    return f"unknown {noun} {listed}{more}; valid fields: {valid}"


def check_field_names(names: Iterable[str], *, allowed: Collection[str], numbered: Collection[str] = ()) -> None:
    """Refuse form field names that are neither in ``allowed`` nor ``<prefix><number>`` for a prefix in
    ``numbered``.

    Raises:
        InvalidRequest: ``unknown_field``, naming each unknown field and the closest valid name.
    """
    unknown = list(dict.fromkeys(n for n in names if n not in allowed and not _is_numbered(n, numbered)))
    if unknown:
        raise InvalidRequest(unknown_fields_message(unknown, allowed, numbered), code="unknown_field")


def check_train_fields(form: FormData) -> None:
    """The field check of ``POST /train``: ``label1..N``, ``files1..N``, ``archive`` and every field of
    ``TrainOptions``. Call it on the parsed form before reading anything else from it.

    Raises:
        InvalidRequest: ``unknown_field``.
    """
    from .schemas import TrainOptions  # schemas use this module's messages

    check_field_names(
        form.keys(), allowed=[*TrainOptions.model_fields, *TRAIN_EXTRA_FIELDS], numbered=TRAIN_NUMBERED_FIELDS
    )


def known_form_fields(*allowed: str, numbered: Collection[str] = ()) -> Callable[..., Any]:
    """A route dependency refusing unknown fields of the form FastAPI parsed for the route (the
    parsed form is cached on the request, so nothing is read twice)."""

    async def dependency(request: Request) -> None:
        form = await request.form()
        check_field_names(form.keys(), allowed=allowed, numbered=numbered)

    return dependency


# --- streaming a form whose file may be large ------------------------------------------------------


@dataclass(frozen=True)
class FormLimits:
    max_file_bytes: int
    max_field_bytes: int
    max_fields: int
    max_files: int


@dataclass
class StreamedFile:
    """An uploaded file written to disk as it arrived; the client's name is metadata only."""

    filename: str
    path: Path
    size: int = 0


@dataclass
class StreamedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, StreamedFile] = field(default_factory=dict)


class _FormReader:
    """python-multipart callbacks: each part's name is checked when its headers end, before its data;
    file data goes straight to a file in ``file_dir`` and stops at the size limit."""

    def __init__(
        self,
        text_fields: Collection[str],
        file_fields: Collection[str],
        file_dir: Path,
        limits: FormLimits,
        charset: str,
    ) -> None:
        self.text_fields, self.file_fields = text_fields, file_fields
        self.file_dir, self.limits, self.charset = file_dir, limits, charset
        self.form = StreamedForm()
        self.error: ServiceError | None = None
        self.unknown: list[str] = []
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._skip = False
        self._data = bytearray()
        self._file: StreamedFile | None = None
        self._handle: BinaryIO | None = None
        self._text_count = 0

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _fail(self, error: ServiceError) -> None:
        self.error = self.error or error

    def _part_begin(self) -> None:
        self._disposition, self._name, self._skip, self._data, self._file = b"", "", False, bytearray(), None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            self._fail(
                ServiceError(
                    'a form part has no name (Content-Disposition: form-data; name="...")', code="invalid_form"
                )
            )
            return
        self._name = options[b"name"].decode(self.charset, errors="replace")
        if self._name not in self.text_fields and self._name not in self.file_fields:
            self.unknown.append(self._name)  # named with the others once the body has been read
            self._skip = True
        elif b"filename" not in options:
            self._text_field()
        else:
            self._file_field(options[b"filename"].decode(self.charset, errors="replace"))

    def _text_field(self) -> None:
        self._text_count += 1
        if self._name not in self.text_fields:
            self._fail(InvalidRequest(f"{self._name}: send a file upload, not text", code="invalid_parameter"))
        elif self._text_count > self.limits.max_fields:
            self._fail(ServiceError(f"more than {self.limits.max_fields} fields (VT_MAX_FIELDS)", code="invalid_form"))

    def _file_field(self, filename: str) -> None:
        if self._name not in self.file_fields:
            self._fail(InvalidRequest(f"{self._name}: send text, not a file", code="invalid_parameter"))
        elif len(self.form.files) >= self.limits.max_files or self._name in self.form.files:
            self._fail(InvalidRequest(f"{self._name}: send one file", code="invalid_parameter"))
        else:
            fd, path = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=self.file_dir)
            self._handle = os.fdopen(fd, "wb")
            self._file = StreamedFile(filename, Path(path))
            self.form.files[self._name] = self._file

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error or self._skip:
            return
        if self._file is None:
            if len(self._data) + end - start > self.limits.max_field_bytes:
                self._fail(
                    ServiceError(
                        f"field {self._name!r} is longer than {self.limits.max_field_bytes // 1024}"
                        " KiB (VT_MAX_FIELD_KB)",
                        code="invalid_form",
                    )
                )
                return
            self._data += data[start:end]
            return
        self._file.size += end - start
        if self._file.size > self.limits.max_file_bytes:
            self._fail(
                PayloadTooLarge(
                    f"{self._file.filename!r} is larger than {self.limits.max_file_bytes / 2**20:g} MiB (VT_MAX_FILE_MB); "
                    "nothing was kept",
                    code="file_too_large",
                )
            )
            return
        assert self._handle is not None
        self._handle.write(data[start:end])

    def _part_end(self) -> None:
        if self.error or self._skip:
            return
        if self._file is None:
            self.form.fields[self._name] = self._data.decode(self.charset, errors="replace")
        self.close()

    def _end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _remove_files(form: StreamedForm) -> None:
    for item in form.files.values():
        item.path.unlink(missing_ok=True)


@asynccontextmanager
async def streamed_form(
    request: Request,
    *,
    text_fields: Collection[str],
    file_fields: Collection[str],
    file_dir: Path,
    limits: FormLimits,
) -> AsyncIterator[StreamedForm]:
    """Read a multipart body chunk by chunk: text fields into memory (bounded), each file into a
    temporary file in ``file_dir``, never more than one network chunk of it in memory. The files are
    removed when the block ends, however it ends.

    Raises:
        InvalidRequest: ``unknown_field`` (the data of unknown fields is not kept); ``invalid_parameter``
            for text sent as a file or the other way round.
        PayloadTooLarge: ``file_too_large``, as soon as a file passes ``limits.max_file_bytes``; the rest
            of the body is not read.
        ServiceError: ``invalid_form`` (400) for a body that is not well-formed multipart (a body that is
            not multipart at all lacks its file: InvalidRequest ``invalid_parameter``).
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise InvalidRequest(
            f"{', '.join(file_fields)}: a file upload is required; send the request as multipart/form-data",
            code="invalid_parameter",
        )
    if b"boundary" not in params:
        raise ServiceError("the multipart/form-data Content-Type has no boundary", code="invalid_form")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "latin-1"
    reader = _FormReader(text_fields, file_fields, file_dir, limits, charset)
    try:
        parser = MultipartParser(params[b"boundary"], reader.callbacks())  # type: ignore[arg-type]
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if reader.error:
                    raise reader.error
            parser.finalize()
        except FormParserError as exc:
            raise ServiceError(f"malformed multipart body: {exc}", code="invalid_form") from None
        if reader.error:
            raise reader.error
        if not reader.ended:
            raise ServiceError("the multipart body ended before its closing boundary", code="invalid_form")
        if reader.unknown:
            allowed = [*file_fields, *text_fields]
            raise InvalidRequest(unknown_fields_message(reader.unknown, allowed), code="unknown_field")
        reader.close()
        yield reader.form
    finally:
        reader.close()
        _remove_files(reader.form)

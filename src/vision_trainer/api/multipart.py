"""Multipart bodies: a streaming parser for forms whose file may be large, and a check that every
other form arrived whole.

A body cut off before its closing boundary is refused (400 ``invalid_form``) on every route:
Starlette's parser returns the parts it completed and silently drops the one it was reading, so a
truncated upload would otherwise look like a smaller, valid one.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Request, Response
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..services.errors import InvalidRequest, PayloadTooLarge, ServiceError
from .form_fields import UnknownFields

TRUNCATED = "the multipart body ended before its closing boundary"


# --- forms Starlette parses ------------------------------------------------------------------------


class _WholeMultiPartParser(MultiPartParser):
    """Starlette's parser, refusing a body that ends before its closing boundary."""

    ended = False

    def on_end(self) -> None:
        self.ended = True

    async def parse(self) -> FormData:
        form = await super().parse()
        if not self.ended:
            await form.close()
            raise MultiPartException(f"{TRUNCATED}; send the whole form")
        return form


class WholeFormRequest(Request):
    """A request whose multipart form (``request.form()``, and the form FastAPI parses for ``File`` and
    ``Form`` parameters) is refused with 400 ``invalid_form`` unless it arrived whole."""

    async def _get_form(
        self, *, max_files: int | float = 1000, max_fields: int | float = 1000, max_part_size: int = 1024 * 1024
    ) -> FormData:
        if self._form is None and _is_multipart(self.headers.get("content-type", "")):
            try:
                async with aclosing(self.stream()) as stream:
                    parser = _WholeMultiPartParser(
                        self.headers, stream, max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
                    )
                    self._form = await parser.parse()
            except MultiPartException as exc:
                raise HTTPException(status_code=400, detail=exc.message) from None
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


class WholeFormRoute(APIRoute):
    """The route class of every router with form routes: its requests are ``WholeFormRequest``s."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def whole_form_handler(request: Request) -> Response:
            return await handler(WholeFormRequest(request.scope, request.receive, request._send))

        return whole_form_handler


def _is_multipart(content_type: str) -> bool:
    return parse_options_header(content_type)[0] == b"multipart/form-data"


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
        self.unknown = UnknownFields([*file_fields, *text_fields])
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
            self._skip = True
            self._unknown_field()
        elif b"filename" not in options:
            self._text_field()
        else:
            self._file_field(options[b"filename"].decode(self.charset, errors="replace"))

    def _unknown_field(self) -> None:
        # Named with the others once the body has been read; a body of many made-up fields is refused
        # as soon as it passes either bound, before the rest of it is read.
        self._text_count += 1
        try:
            self.unknown.add(self._name)
        except InvalidRequest as exc:
            self._fail(exc)
            return
        if self._text_count > self.limits.max_fields:
            self._fail(ServiceError(f"more than {self.limits.max_fields} fields (VT_MAX_FIELDS)", code="invalid_form"))

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
    from python_multipart.multipart import MultipartParser

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
            raise ServiceError(f"{TRUNCATED}; send the whole form", code="invalid_form")
        reader.unknown.check()
        reader.close()
        yield reader.form
    finally:
        reader.close()
        _remove_files(reader.form)

"""Form field names: refuse the ones an endpoint does not know, and describe forms in the API docs.

A misspelt field (``epoch`` for ``epochs``, ``file1`` for ``files1``) used to be ignored silently, so
the request ran with a default nobody asked for. Every form endpoint now answers 422 ``unknown_field``
naming each unknown field and the closest valid name. (Schemas use the same messages for JSON keys.)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any

from fastapi import Request

from ..services.errors import InvalidRequest

_TRAILING_NUMBER = re.compile(r"([0-9]+)$")
MAX_UNKNOWN_FIELDS = 10  # distinct unknown names named in a refusal; one more and the form is refused at once
_MAX_NAME_CHARS = 64

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


def is_numbered(name: str, prefixes: Iterable[str]) -> bool:
    """Whether ``name`` is ``<prefix><ASCII digits>`` for one of ``prefixes``."""
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


def unknown_fields_message(
    unknown: list[str], allowed: Collection[str], numbered: Collection[str] = (), *, more: bool = False
) -> str:
    """``unknown field 'epoch'; did you mean 'epochs'?`` (and the valid names when one has no close match).

    ``more``: the request had further unknown fields than those listed (it was refused before they were read).
    """
    hints = [(name, closest_field(name, allowed, numbered)) for name in unknown[:MAX_UNKNOWN_FIELDS]]
    valid = ", ".join([*allowed, *(f"{p}1..{p}N" for p in numbered)])
    if len(unknown) == 1 and hints[0][1] and not more:
        return f"unknown field {_shown(unknown[0])}; did you mean {hints[0][1]!r}?"
    listed = ", ".join(_shown(name) + (f" (did you mean {hint!r}?)" if hint else "") for name, hint in hints)
    extra = len(unknown) - MAX_UNKNOWN_FIELDS
    tail = f" and {extra} more" if extra > 0 and not more else " and more" if more else ""
    noun = "field" if len(unknown) == 1 and not more else "fields"
    return f"unknown {noun} {listed}{tail}; valid fields: {valid}"


class UnknownFields:
    """The distinct unknown names of a form as its parts arrive, at most ``MAX_UNKNOWN_FIELDS`` of them:
    one more and ``add`` raises at once, so that a body of countless made-up fields is refused early."""

    def __init__(self, allowed: Collection[str], numbered: Collection[str] = ()) -> None:
        self.allowed, self.numbered = allowed, numbered
        self.names: dict[str, None] = {}

    def add(self, name: str) -> None:
        """Note an unknown name.

        Raises:
            InvalidRequest: ``unknown_field``, once a name beyond ``MAX_UNKNOWN_FIELDS`` distinct ones arrives.
        """
        if name in self.names:
            return
        if len(self.names) >= MAX_UNKNOWN_FIELDS:
            raise InvalidRequest(
                unknown_fields_message(list(self.names), self.allowed, self.numbered, more=True), code="unknown_field"
            )
        self.names[name] = None

    def check(self) -> None:
        """Raises InvalidRequest (``unknown_field``) naming every unknown field noted, if any."""
        if self.names:
            raise InvalidRequest(
                unknown_fields_message(list(self.names), self.allowed, self.numbered), code="unknown_field"
            )


def check_field_names(names: Iterable[str], *, allowed: Collection[str], numbered: Collection[str] = ()) -> None:
    """Refuse form field names that are neither in ``allowed`` nor ``<prefix><number>`` for a prefix in
    ``numbered``.

    Raises:
        InvalidRequest: ``unknown_field``, naming each unknown field (at most ``MAX_UNKNOWN_FIELDS``) and
            the closest valid name.
    """
    unknown = UnknownFields(allowed, numbered)
    for name in names:
        if name not in allowed and not is_numbered(name, numbered):
            unknown.add(name)
    unknown.check()


def known_form_fields(*allowed: str, numbered: Collection[str] = ()) -> Callable[..., Any]:
    """A route dependency refusing unknown fields of the form FastAPI parsed for the route (the
    parsed form is cached on the request, so nothing is read twice)."""

    async def dependency(request: Request) -> None:
        form = await request.form()
        check_field_names(form.keys(), allowed=allowed, numbered=numbered)

    return dependency

"""Command-line flags made from a request model's fields, so a field added to the model is a flag at once.

Each field ``some_name`` becomes ``--some-name``: its type from the annotation (``Optional`` unwrapped), choices
from a ``Literal`` or an ``Enum``, ``--x/--no-x`` for a bool, the help from the field's description, default
and bounds. Every flag defaults to None, and None values are left out of the model's input, so a flag not
given leaves the model's own default in place. A type the command line cannot spell is read as JSON.
"""

from __future__ import annotations

import argparse
import enum
import json
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PLAIN_TYPES: tuple[type, ...] = (int, float, str)
# The constraints pydantic keeps in a field's metadata (annotated_types.Ge...), and how help shows them.
BOUND_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "max_length": "at most"}


def flag_name(field_name: str) -> str:
    """``augment_views`` -> ``--augment-views``."""
    return "--" + field_name.replace("_", "-")


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag per field of ``model``, its ``dest`` the field's name."""
    for name, info in model.model_fields.items():
        parser.add_argument(flag_name(name), dest=name, default=None, help=_help(info), **_kind(info.annotation))


def model_values(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The flags of ``model``'s fields that were given (None: left to the model's default)."""
    return {name: value for name in model.model_fields if (value := getattr(args, name, None)) is not None}


def _without_none(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations unchanged."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        kept = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kept) == 1:
            return kept[0]
    return annotation


def _kind(annotation: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords that read a value of ``annotation``."""
    annotation = _without_none(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(annotation) is Literal:
        return _choices(list(typing.get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _choices([member.value for member in annotation])
    if annotation in PLAIN_TYPES:
        return {"type": annotation}
    return {"type": json.loads, "metavar": "JSON"}


def _choices(values: list[Any]) -> dict[str, Any]:
    kinds = {type(v) for v in values}
    return {"choices": values, "type": kinds.pop() if len(kinds) == 1 else str}


def _help(info: FieldInfo) -> str:
    """The field's description, then its default and bounds: ``Seed of ... (default 0; 0..2147483647)``."""
    notes = [note for note in (_default_note(info), _bounds_note(info)) if note]
    text = " ".join(filter(None, [info.description, f"({'; '.join(notes)})" if notes else ""]))
    return text.replace("%", "%%")  # argparse formats help strings with %


def _default_note(info: FieldInfo) -> str:
    if info.default is PydanticUndefined or info.default is None:
        return ""
    if isinstance(info.default, bool):
        return "default: " + ("on" if info.default else "off")
    value = info.default.value if isinstance(info.default, enum.Enum) else info.default
    return f"default {value}"


def _bounds_note(info: FieldInfo) -> str:
    bounds = {
        key: value
        for bound in info.metadata
        for key in BOUND_SYMBOLS
        if (value := getattr(bound, key, None)) is not None
    }
    if "max_length" in bounds:
        return f"at most {bounds['max_length']} characters"
    if bounds.keys() == {"ge", "le"}:
        return f"{bounds['ge']}..{bounds['le']}"
    return ", ".join(f"{BOUND_SYMBOLS[key]} {value}" for key, value in bounds.items())

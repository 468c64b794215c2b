"""``vision-trainer export | models``: registered models."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from .common import emit, open_services


def _export(args: argparse.Namespace) -> int:
    from ..services import exports

    with open_services() as services:
        path = exports.export_file(services, args.model_id, args.format)
        shutil.copyfile(path, args.output)
    emit(
        {
            "model_id": args.model_id,
            "format": args.format,
            "output": str(args.output),
            "size_bytes": args.output.stat().st_size,
        }
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from ..services import models

    with open_services() as services:
        emit(models.list_models(services, limit=args.limit, offset=args.offset))
    return 0


def add_commands(commands: Any) -> None:
    """``export`` and ``models``, on the top-level sub-parsers ``commands``."""
    export = commands.add_parser("export", help="write a model as ONNX or TorchScript")
    export.add_argument("model_id")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.set_defaults(func=_export)

    listing = commands.add_parser("models", help="list registered models, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(func=_models)

"""``vision-trainer export | models``: registered models."""

from __future__ import annotations

import argparse
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from .common import emit, open_services
from .follow import run_and_follow

FORMATS = ["onnx", "torchscript", "tflite", "tflite-int8", "openvino", "onnx-int8", "coreml"]


def _export(args: argparse.Namespace) -> int:
    from ..services import exports

    with open_services() as services:
        if args.format in exports.FILE_NAMES:
            path = exports.export_file(services, args.model_id, args.format)
            verification = None
        else:
            path, verification = _bundle(services, args.model_id, args.format)
        shutil.copyfile(path, args.output)
    emit(
        {
            "model_id": args.model_id,
            "format": args.format,
            "output": str(args.output),
            "size_bytes": args.output.stat().st_size,
            **({"verification": verification} if verification is not None else {}),
        }
    )
    return 0


def _bundle(services: Any, model_id: str, fmt: str) -> tuple[Path, dict[str, Any]]:
    """A bundled format's zip: cached, or built now by an export job run in this process (its log and
    progress on stderr, as training's). Raises ServiceError when the job fails."""
    from ..jobs.inline import CallerRunsQueue
    from ..services import exports
    from ..services.errors import ServiceError
    from ..services.work.runner import final_message

    state = exports.request_export(services, CallerRunsQueue(), model_id, fmt)
    if state.job is not None:
        job = run_and_follow(services, state.job["job_id"])
        if job["status"] != "succeeded":
            raise ServiceError(final_message(job), code=f"export_{job['status']}")
        state = exports.request_export(services, CallerRunsQueue(), model_id, fmt)
    assert state.path is not None
    with zipfile.ZipFile(state.path) as bundle:
        return state.path, json.loads(bundle.read("metadata.json"))["verification"]


def _models(args: argparse.Namespace) -> int:
    from ..services import models

    with open_services() as services:
        emit(models.list_models(services, limit=args.limit, offset=args.offset))
    return 0


def add_commands(commands: Any) -> None:
    """``export`` and ``models``, on the top-level sub-parsers ``commands``."""
    export = commands.add_parser(
        "export",
        help="write a model as ONNX or TorchScript, or as a verified LiteRT, OpenVINO, ONNX int8 or Core ML zip",
    )
    export.add_argument("model_id")
    export.add_argument("--format", choices=FORMATS, default="onnx")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.set_defaults(func=_export)

    listing = commands.add_parser("models", help="list registered models, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(func=_models)

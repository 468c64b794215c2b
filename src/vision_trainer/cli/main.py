"""The ``vision-trainer`` parser and ``main()``: each command module adds its sub-commands."""

from __future__ import annotations

import argparse
import os
import sys

from ..ml.errors import MLError
from ..services.errors import ServiceError
from . import datasets, models, prediction, server, training
from .common import CommandError, refuse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vision-trainer",
        description="Vision Trainer (settings from VT_* variables). Commands print one JSON document on stdout; "
        "logs and progress go to stderr.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    server.add_commands(commands)
    datasets.add_commands(commands)
    training.add_command(commands)
    prediction.add_command(commands)
    models.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `vision-trainer ... | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 1
    except (ServiceError, CommandError) as exc:
        return refuse(exc.code, exc.detail, getattr(exc, "errors", None))
    except MLError as exc:
        return refuse(exc.code, str(exc))

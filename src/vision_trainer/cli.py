"""Command line: ``vision-trainer serve``."""

from __future__ import annotations

import argparse
import logging
import sys

from .settings import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    uvicorn.run(
        "vision_trainer.api.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        reload=args.reload,
        log_level=settings.log_level,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vision-trainer", description="Vision Trainer service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the HTTP API (settings from VT_* variables)")
    serve.add_argument("--host", help="bind address (default VT_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default VT_PORT, 8000)")
    serve.add_argument("--reload", action="store_true", help="restart on source changes (development)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

"""``vision-trainer serve | worker``: the HTTP API and the Celery worker, in this process."""

from __future__ import annotations

import argparse
import ctypes
import logging
import sys
from typing import Any

from ..settings import Settings, get_settings

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads their own malloc arenas; with a training thread, request threads and decode
    threads the freed memory stays spread over them and RSS creeps up from job to job. Two arenas keep
    it flat (bench/responsiveness.py). Must run before the threads start; a no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _start_process(settings: Settings) -> None:
    """What the server and the worker do first: bounded malloc arenas, then logging at VT_LOG_LEVEL."""
    _limit_malloc_arenas()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")


def _warn_if_open(host: str, settings: Settings) -> None:
    if host not in LOCAL_HOSTS and not settings.api_key_list:
        logging.getLogger("vision_trainer").warning(
            "binding %s without API keys: anyone who can reach this port can train, predict and delete; "
            "set VT_API_KEYS",
            host,
        )


def _serve(args: argparse.Namespace) -> int:
    from ..api.server import serve

    settings = get_settings()
    _start_process(settings)
    host = args.host or settings.host
    _warn_if_open(host, settings)
    serve(settings, host=host, port=args.port or settings.port, reload=args.reload)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from ..jobs.celery_queue import WorkerSetupError, run_worker

    if args.concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    settings = get_settings()
    _start_process(settings)
    try:
        run_worker(settings, concurrency=args.concurrency)
    except WorkerSetupError as exc:
        print(f"vision-trainer worker: {exc}", file=sys.stderr)
        return 2
    return 0


def add_commands(commands: Any) -> None:
    """``serve`` and ``worker``, on the top-level sub-parsers ``commands``."""
    serve = commands.add_parser("serve", help="start the HTTP API")
    serve.add_argument("--host", help="bind address (default VT_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default VT_PORT, 8000)")
    serve.add_argument("--reload", action="store_true", help="restart on source changes (development)")
    serve.set_defaults(func=_serve)

    worker = commands.add_parser(
        "worker", help="train jobs from the Celery broker (VT_BROKER_URL) for an API with VT_JOB_BACKEND=celery"
    )
    worker.add_argument("--concurrency", type=int, default=1, help="jobs trained at once (default 1)")
    worker.set_defaults(func=_worker)

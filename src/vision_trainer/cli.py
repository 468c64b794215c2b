"""Command line: ``vision-trainer serve | worker | train | predict | export | models``.

Every command but ``serve`` and ``worker`` works directly on the data dir (``VT_DATA_DIR``) through the same
services the HTTP API uses.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from .settings import get_settings


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads their own malloc arenas; with a training thread, request threads and decode
    threads the freed memory stays spread over them and RSS creeps up from job to job. Two arenas keep
    it flat (bench/responsiveness.py). Must run before the threads start; a no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    _limit_malloc_arenas()
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    host = args.host or settings.host
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key_list:
        logging.getLogger("vision_trainer").warning(
            "binding %s without API keys: anyone who can reach this port can train, predict and delete; "
            "set VT_API_KEYS", host)
    uvicorn.run(
        "vision_trainer.api.app:create_app",
        factory=True,
        host=host,
        port=args.port or settings.port,
        reload=args.reload,
        log_level=settings.log_level,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .jobs.celery_queue import WorkerSetupError, run_worker

    if args.concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    _limit_malloc_arenas()
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    try:
        run_worker(settings, concurrency=args.concurrency)
    except WorkerSetupError as exc:
        print(f"vision-trainer worker: {exc}", file=sys.stderr)
        return 2
    return 0


@contextmanager
def _services() -> Iterator[Any]:
    from .services.context import Services

    services = Services.create(get_settings())
    try:
        yield services
    finally:
        services.close()


def _class_folders(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise SystemExit(f"{root} is not a folder; give a folder with one sub-folder of images per class")
    classes = {d.name: sorted(p for p in d.iterdir() if p.is_file()) for d in sorted(root.iterdir()) if d.is_dir()}
    if len(classes) < 2:
        raise SystemExit(f"{root} has {len(classes)} class sub-folder(s); at least 2 are needed")
    return classes


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .jobs.inline import CallerRunsQueue
    from .services import jobs as job_service
    from .services import training
    from .services.runner import run_training_job
    from .services.errors import ServiceError
    from .services.uploads import Upload

    classes = _class_folders(args.folder)
    with _services() as services, ExitStack() as files:
        uploads = [[Upload(p.name, files.enter_context(p.open("rb"))) for p in paths] for paths in classes.values()]
        request = training.TrainingRequest(
            labels=list(classes), files=uploads, epochs=args.epochs, backbone=args.backbone,
            test_split=args.test_split, seed=args.seed, name=args.name, augment_views=args.augment_views,
            skip_invalid=args.skip_invalid, early_stopping=args.early_stopping,
        )
        try:
            job = training.submit_training(services, CallerRunsQueue(), request)
        except ServiceError as exc:
            print(f"error ({exc.code}): {exc.detail}", file=sys.stderr)
            for error in exc.errors or []:
                print(f"  {error['filename']}: {error['detail']}", file=sys.stderr)
            return 2
        worker = threading.Thread(target=run_training_job, args=(services, job["job_id"]))
        worker.start()
        shown = 0
        with tqdm(total=1, unit="img", leave=False) as bar:
            while True:
                job = job_service.get_job(services, job["job_id"])
                for line in job["log"][shown:]:
                    tqdm.write(line)
                shown = len(job["log"])
                progress = job["progress"]
                bar.set_description(progress["phase"])
                bar.total, bar.n = max(progress["total"], 1), progress["done"]
                bar.refresh()
                if not worker.is_alive():
                    break
                time.sleep(0.2)
        job = job_service.get_job(services, job["job_id"])
    for line in job["log"][shown:]:
        print(line)
    if job["status"] != "succeeded":
        print(f"training {job['status']}: {job['error'] or ''}", file=sys.stderr)
        return 1
    metrics = {k: job["metrics"][k] for k in ("test_accuracy", "test_count", "per_class", "calibration")}
    print(json.dumps({"model_id": job["model_id"], "metrics": metrics}, indent=2, ensure_ascii=False))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .ml.errors import MLError
    from .services import prediction
    from .services.errors import ServiceError

    status = 0
    with _services() as services:
        for path in args.images:
            try:
                answer = prediction.predict_image(services, path.read_bytes(), model_id=args.model,
                                                  top_k=args.top_k, min_confidence=args.min_confidence)
                print(json.dumps({"file": str(path), **answer}, ensure_ascii=False))
            except (MLError, ServiceError, OSError) as exc:
                print(json.dumps({"file": str(path), "error": str(exc)}), file=sys.stderr)
                status = 1
    return status


def _export(args: argparse.Namespace) -> int:
    from .services import exports

    with _services() as services:
        path = exports.export_file(services, args.model_id, args.format)
        shutil.copyfile(path, args.output)
    print(f"wrote {args.output} ({args.format})")
    return 0


def _models(args: argparse.Namespace) -> int:
    from .services import models

    with _services() as services:
        listing = models.list_models(services, limit=args.limit, offset=0)
    for item in listing["items"]:
        accuracy = item["metrics"]["test_accuracy"]
        shown = f"{accuracy:.4f}" if accuracy is not None else "  -   "
        print(f"{item['model_id']}  {item['created_at'][:19]}  acc {shown}  {item['backbone']:<18}  {item['name']}")
    print(f"{listing['count']} model(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vision-trainer", description="Vision Trainer (settings from VT_* variables)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the HTTP API")
    serve.add_argument("--host", help="bind address (default VT_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default VT_PORT, 8000)")
    serve.add_argument("--reload", action="store_true", help="restart on source changes (development)")
    serve.set_defaults(func=_serve)

    worker = commands.add_parser(
        "worker", help="train jobs from the Celery broker (VT_BROKER_URL) for an API with VT_JOB_BACKEND=celery")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs trained at once (default 1)")
    worker.set_defaults(func=_worker)

    train = commands.add_parser("train", help="train on FOLDER/<class>/<images> and register the model")
    train.add_argument("folder", type=Path)
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--backbone", choices=["resnet18", "efficientnet_lite0"])
    train.add_argument("--test-split", type=float, default=0.2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--name")
    train.add_argument("--augment-views", type=int)
    train.add_argument("--skip-invalid", action="store_true", help="train on the usable images, list the rest")
    train.add_argument("--early-stopping", action="store_true", help="stop when the validation loss stalls")
    train.set_defaults(func=_train)

    predict = commands.add_parser("predict", help="classify images with a registered model")
    predict.add_argument("images", type=Path, nargs="+")
    predict.add_argument("--model", help="model id (default: the default model, else the newest)")
    predict.add_argument("--top-k", type=int)
    predict.add_argument("--min-confidence", type=float, default=0.0)
    predict.set_defaults(func=_predict)

    export = commands.add_parser("export", help="write a model as ONNX or TorchScript")
    export.add_argument("model_id")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.set_defaults(func=_export)

    listing = commands.add_parser("models", help="list registered models, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

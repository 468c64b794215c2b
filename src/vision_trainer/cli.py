"""Command line: ``vision-trainer serve | worker | datasets | train | predict | export | models``.

Every command but ``serve`` and ``worker`` works directly on the data dir (``VT_DATA_DIR``) through the same
services, and so the same checks, as the HTTP API. Each prints one JSON document on stdout; logs, progress
bars and errors go to stderr, so ``vision-trainer ... | jq`` always reads clean JSON. A refused request prints
``error (code): detail`` and exits 2; a training job that ends failed or cancelled exits 1.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .ml.errors import MLError
from .services.errors import ServiceError
from .settings import get_settings

if TYPE_CHECKING:
    from tqdm import tqdm

    from .services.context import Services
    from .services.datasets import ImageGroup
    from .services.training import TrainingOptions
    from .services.uploads import Upload

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PREDICT_BATCH = 32
POLL_S = 0.2
# Phases whose progress counts something worth a bar, and what it counts.
PROGRESS_UNITS = {"extracting": "img", "training": "epoch"}
SUMMARY_METRICS = (
    "test_accuracy",
    "test_accuracy_ci",
    "test_count",
    "per_class",
    "confusion_matrix",
    "calibration",
    "features_extracted",
    "features_reused",
    "best_epoch",
)


class CommandError(Exception):
    """A command line that cannot be carried out (a missing folder...); printed like a service error."""

    def __init__(self, detail: str, *, code: str = "invalid_path") -> None:
        super().__init__(detail)
        self.detail, self.code = detail, code


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
            "set VT_API_KEYS",
            host,
        )
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


# --- output --------------------------------------------------------------------------------------


def _emit(document: Any) -> None:
    """The command's one JSON document, on stdout."""
    print(json.dumps(document, indent=2, ensure_ascii=False))


def _note(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # above any bar, never on stdout


def _refuse(code: str, detail: str, errors: Sequence[dict[str, Any]] | None = None) -> int:
    print(f"error ({code}): {detail}", file=sys.stderr)
    for error in errors or []:
        print(f"  {error.get('filename', '')}: {error.get('detail', '')}", file=sys.stderr)
    return 2


def _bar(total: int, unit: str, desc: str, *, initial: int = 0) -> tqdm:
    from tqdm import tqdm

    # No rate: a job's steps are replayed from its events, so steps per second would be meaningless.
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        initial=initial,
        file=sys.stderr,
        dynamic_ncols=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}]",
    )


@contextmanager
def _services() -> Iterator[Services]:
    from .services.context import Services

    services = Services.create(get_settings())
    try:
        yield services
    finally:
        services.close()


# --- files on disk -> uploads --------------------------------------------------------------------


class _LazyFile(io.RawIOBase):
    """Opens its file on the first read and closes it at the end, so a folder of thousands of photos
    never holds thousands of open files; ``on_done`` counts the files read."""

    def __init__(self, path: Path, on_done: Callable[[], object]) -> None:
        super().__init__()
        self._path, self._on_done = path, on_done
        self._file: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            return 0
        if self._file is None:
            self._file = self._path.open("rb")
        count = self._file.readinto(buffer)  # type: ignore[attr-defined]  # opened in binary mode: a BufferedReader
        if not count:
            self.close()
            self._on_done()
        return count or 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def _images_in(folder: Path, skipped: list[dict[str, Any]]) -> list[Path]:
    """The image files directly in ``folder`` (by suffix); other visible files go to ``skipped``."""
    images = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            skipped.append(
                {
                    "filename": str(path),
                    "code": "skipped_entry",
                    "detail": f"{str(path)!r}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})",
                }
            )
    return images


def _class_folders(root: Path, *, minimum: int) -> dict[str, Path]:
    if not root.is_dir():
        raise CommandError(f"{root} is not a folder; give a folder with one sub-folder of images per class")
    classes = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if len(classes) < minimum:
        raise CommandError(
            f"{root} has {len(classes)} class sub-folder(s); at least {minimum} needed "
            "(one sub-folder of images per class)",
            code="invalid_folder_layout",
        )
    return classes


class _Ticker:
    """Counts files as they are read, on a bar that appears with the first one (a request refused
    before any photo is read shows none)."""

    def __init__(self) -> None:
        self.total = 0
        self.bar: tqdm | None = None

    def __call__(self) -> None:
        if self.bar is None and self.total:
            self.bar = _bar(self.total, "img", "reading")
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Source:
    """What a folder or an archive file on disk becomes: class groups (read lazily) or an archive upload."""

    groups: list[ImageGroup]
    archive: Upload | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    ticker: _Ticker = field(default_factory=_Ticker)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Photos read by the service are counted on a bar (not an archive's: it is read whole)."""
        self.ticker.total = sum(len(g.uploads) for g in self.groups)
        try:
            yield
        finally:
            self.ticker.close()


def _read_source(path: Path, *, label: str | None, unlabelled: bool, min_classes: int) -> _Source:
    """A folder (one sub-folder per class, or one class with ``label``, or unlabelled) or an archive file."""
    from .services.datasets import ImageGroup
    from .services.uploads import Upload

    if not path.exists():
        raise CommandError(f"{path} does not exist; give a folder or a zip, tar or tar.gz archive of class folders")
    if path.is_file():
        if label is not None or unlabelled:
            raise CommandError(
                "an archive carries its labels as class folders; --label and --unlabelled are for folders",
                code="invalid_parameter",
            )
        return _Source(groups=[], archive=Upload(path.name, cast(BinaryIO, _LazyFile(path, lambda: None))))
    source = _Source(groups=[])

    def uploads(paths: list[Path]) -> list[Upload]:
        return [Upload(p.name, cast(BinaryIO, _LazyFile(p, source.ticker))) for p in paths]

    if label is not None or unlabelled:
        source.groups = [ImageGroup(label, uploads(_images_in(path, source.skipped)), "files")]
    else:
        classes = _class_folders(path, minimum=min_classes)
        source.groups = [
            ImageGroup(name, uploads(_images_in(folder, source.skipped)), name) for name, folder in classes.items()
        ]
        if loose := [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]:
            _note(
                f"{len(loose)} file(s) directly in {path} are left out: photos go in one sub-folder per class "
                "(or add them with --label or --unlabelled)"
            )
    for entry in source.skipped:
        _note(f"skipped {entry['detail']}")
    return source


# --- datasets ------------------------------------------------------------------------------------


def _datasets_create(args: argparse.Namespace) -> int:
    from .services import datasets

    with _services() as services:
        _emit(datasets.create_dataset(services, args.name))
    return 0


def _datasets_list(args: argparse.Namespace) -> int:
    from .services import datasets

    with _services() as services:
        _emit(datasets.list_datasets(services, limit=args.limit, offset=args.offset))
    return 0


def _datasets_show(args: argparse.Namespace) -> int:
    from .services import datasets

    with _services() as services:
        _emit(datasets.get_dataset(services, args.dataset_id))
    return 0


def _datasets_add(args: argparse.Namespace) -> int:
    from .services import datasets

    with _services() as services:
        datasets.get_dataset(services, args.dataset_id)  # an unknown id is refused before reading any photo
        source = _read_source(args.path, label=args.label, unlabelled=args.unlabelled, min_classes=1)
        request = datasets.AddImages(groups=source.groups, archive=source.archive, skip_invalid=args.skip_invalid)
        with source.reading():
            added = datasets.add_images(services, args.dataset_id, request)
    added["skipped"] = source.skipped + added["skipped"]
    for entry in added["errors"]:
        _note(f"skipped {entry['detail']}")
    _note(
        f"added {len(added['added'])} photo(s), {len(added['duplicates'])} duplicate(s) not stored again; "
        f"dataset version {added['version']}"
    )
    _emit(added)
    return 0


# --- training ------------------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> TrainingOptions:
    """The training options, checked by the service (``invalid_parameter``) before anything is read or stored."""
    from .services.training import training_options

    return training_options(
        {
            "epochs": args.epochs,
            "backbone": args.backbone,
            "test_split": args.test_split,
            "seed": args.seed,
            "name": args.name,
            "augment_views": args.augment_views,
            "early_stopping": args.early_stopping or None,
        }
    )


def _train(args: argparse.Namespace) -> int:
    from .jobs.inline import CallerRunsQueue
    from .services import training

    if (args.folder is None) == (args.dataset is None):
        raise CommandError("give either a FOLDER (or archive) to train on, or --dataset ID", code="invalid_parameter")
    options = _options(args)
    queue = CallerRunsQueue()
    with _services() as services:
        if args.dataset is not None:
            job = training.submit_dataset_training(services, queue, args.dataset, options)
        else:
            source = _read_source(args.folder, label=None, unlabelled=False, min_classes=2)
            request = training.TrainingRequest(
                labels=[g.label or "" for g in source.groups],
                files=[g.uploads for g in source.groups],
                options=options,
                archive=source.archive,
                skip_invalid=args.skip_invalid,
            )
            with source.reading():
                job = training.submit_training(services, queue, request)
        job = _run_and_follow(services, job["job_id"])
    _emit(_job_summary(job))
    if job["status"] != "succeeded":
        print(f"error (training_{job['status']}): {job['error'] or 'the job did not finish'}", file=sys.stderr)
        return 1
    return 0


def _run_and_follow(services: Services, job_id: str) -> dict[str, Any]:
    """Train the queued job in a thread while the log and a progress bar go to stderr; Ctrl-C cancels it."""
    from .services.runner import run_training_job

    worker = threading.Thread(target=run_training_job, args=(services, job_id), name=f"train-{job_id[:8]}")
    worker.start()
    follower = _JobFollower(services, job_id)
    try:
        while True:
            try:
                return follower.follow(worker)
            except KeyboardInterrupt:
                follower.cancel()
    finally:
        follower.close()


class _JobFollower:
    """Shows a running job on stderr: new log lines, and one bar per phase in that phase's unit."""

    def __init__(self, services: Services, job_id: str) -> None:
        self.services, self.job_id = services, job_id
        self.after = 0
        self.phase: str | None = None
        self.bar: tqdm | None = None

    def follow(self, worker: threading.Thread) -> dict[str, Any]:
        from .services.jobs import get_job, job_events

        while True:
            ended = not worker.is_alive()
            # The job's events, not its row: every log line and every phase's last step, in order,
            # however short the phase was.
            for event_id, kind, data in job_events(self.services, self.job_id, self.after):
                self.after = event_id
                if kind == "log":
                    _note(data["line"])
                elif kind == "progress":
                    self._show(data)
            if ended:
                return get_job(self.services, self.job_id)
            time.sleep(POLL_S)

    def _show(self, progress: dict[str, Any]) -> None:
        phase, done, total = progress["phase"], progress["done"], progress["total"]
        if phase != self.phase:
            self.close()
            self.phase = phase
        if self.bar is None and phase in PROGRESS_UNITS and total > 0:
            self.bar = _bar(total, PROGRESS_UNITS[phase], phase, initial=done)
        if self.bar is not None:
            self.bar.total = max(total, done)
            self.bar.update(done - self.bar.n)

    def cancel(self) -> None:
        from .jobs.inline import CallerRunsQueue
        from .services.jobs import cancel_job

        _note("cancelling: the job stops at its next batch")
        try:
            cancel_job(self.services, CallerRunsQueue(), self.job_id)
        except ServiceError:  # it ended meanwhile
            pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _job_summary(job: dict[str, Any]) -> dict[str, Any]:
    metrics = job["metrics"] or {}
    return {
        "job_id": job["job_id"],
        "status": job["status"],
        "model_id": job["model_id"],
        "dataset_id": job["dataset_id"],
        "dataset_version": job["dataset_version"],
        "class_names": job["class_names"],
        "backbone": job["params"].get("backbone"),
        "epochs": job["epochs"],
        "duration_s": job["duration_s"],
        "error": job["error"],
        "metrics": {k: metrics[k] for k in SUMMARY_METRICS if k in metrics},
        "log": job["log"],
    }


# --- prediction ----------------------------------------------------------------------------------


def _predict_inputs(paths: Sequence[Path], class_names: Sequence[str]) -> list[tuple[Path, str | None]]:
    """Each file to classify with its expected label: the class a folder's sub-folder is named after
    (matched ignoring case), else None. Files named on the command line are always tried."""
    classes = {name.casefold(): name for name in class_names}
    inputs: list[tuple[Path, str | None]] = []
    skipped: list[dict[str, Any]] = []
    for path in paths:
        if path.is_dir():
            inputs += [(p, None) for p in _images_in(path, skipped)]
            for sub in sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")):
                expected = classes.get(sub.name.casefold())
                if expected is None:
                    _note(f"{sub} is not named after a class of the model; its photos are classified, not scored")
                inputs += [(p, expected) for p in _images_in(sub, skipped)]
        else:
            inputs.append((path, None))
    for entry in skipped:
        _note(f"skipped {entry['detail']}")
    if not inputs:
        raise CommandError("no images to classify: give image files, or folders of them", code="no_images")
    return inputs


def _predict(args: argparse.Namespace) -> int:
    from .services import prediction

    with _services() as services:
        model_id = prediction.resolve_model_id(services, args.model)
        class_names = prediction.load_predictor(services, model_id).class_names
        inputs = _predict_inputs(args.images, class_names)
        entries = []
        with _bar(len(inputs), "img", "predicting") as bar:
            for start in range(0, len(inputs), PREDICT_BATCH):
                chunk = inputs[start : start + PREDICT_BATCH]
                entries += _predict_chunk(services, model_id, chunk, args)
                bar.update(len(chunk))
    document: dict[str, Any] = {
        "model_id": model_id,
        "class_names": class_names,
        "count": len(entries),
        "predictions": entries,
    }
    if any("expected" in e for e in entries):
        document["accuracy"] = _accuracy(entries, class_names)
    _emit(document)
    failed = [e for e in entries if "error" in e]
    for entry in failed:
        _note(f"error ({entry['error']['code']}): {entry['error']['detail']}")
    return 1 if failed else 0


def _predict_chunk(
    services: Services, model_id: str, chunk: Sequence[tuple[Path, str | None]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    from .services import prediction

    readable, unreadable = [], {}
    for path, _ in chunk:
        try:
            readable.append((str(path), path.read_bytes()))
        except OSError as exc:
            unreadable[str(path)] = {"code": "unreadable_file", "detail": f"{str(path)!r}: {exc.strerror or exc}"}
    answers = iter(
        prediction.predict_batch(
            services, readable, model_id=model_id, top_k=args.top_k, min_confidence=args.min_confidence
        )["predictions"]
        if readable
        else []
    )
    entries = []
    for path, expected in chunk:
        entry = {"error": unreadable[str(path)]} if str(path) in unreadable else next(answers)
        entry.pop("filename", None)
        entry = {"file": str(path), **entry}
        if expected is not None:
            entry["expected"] = expected
        entries.append(entry)
    return entries


def _accuracy(entries: Sequence[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """Overall and per-class accuracy, and the confusion counts, over the files whose class is known
    (files that could not be read or decoded are left out and counted in ``errors``)."""
    scored = [e for e in entries if "expected" in e and "error" not in e]
    per_class: dict[str, dict[str, Any]] = {}
    confusion: dict[str, dict[str, int]] = {}
    for name in class_names:
        mine = [e for e in scored if e["expected"] == name]
        if not mine:
            continue
        correct = sum(e["prediction"] == name for e in mine)
        per_class[name] = {"accuracy": round(correct / len(mine), 4), "correct": correct, "count": len(mine)}
        confusion[name] = {}
        for entry in mine:
            confusion[name][entry["prediction"]] = confusion[name].get(entry["prediction"], 0) + 1
    correct = sum(c["correct"] for c in per_class.values())
    return {
        "overall": round(correct / len(scored), 4) if scored else None,
        "correct": correct,
        "count": len(scored),
        "errors": sum(1 for e in entries if "expected" in e and "error" in e),
        "per_class": per_class,
        "confusion": confusion,
    }


# --- models --------------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from .services import exports

    with _services() as services:
        path = exports.export_file(services, args.model_id, args.format)
        shutil.copyfile(path, args.output)
    _emit(
        {
            "model_id": args.model_id,
            "format": args.format,
            "output": str(args.output),
            "size_bytes": args.output.stat().st_size,
        }
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from .services import models

    with _services() as services:
        _emit(models.list_models(services, limit=args.limit, offset=args.offset))
    return 0


# --- the parser ----------------------------------------------------------------------------------


def _add_dataset_commands(commands: Any) -> None:
    datasets = commands.add_parser("datasets", help="create, fill and list datasets (train them with train --dataset)")
    actions = datasets.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="a new empty dataset")
    create.add_argument("name")
    create.set_defaults(func=_datasets_create)

    add = actions.add_parser(
        "add",
        help="add photos: FOLDER/<class>/<images>, a zip/tar/tar.gz of class folders, "
        "or a folder of one class (--label) or unlabelled photos (--unlabelled)",
    )
    add.add_argument("dataset_id")
    add.add_argument("path", type=Path, help="a folder, or an archive file")
    one = add.add_mutually_exclusive_group()
    one.add_argument("--label", help="every photo of the folder is of this class")
    one.add_argument("--unlabelled", action="store_true", help="the folder's photos have no label yet")
    add.add_argument("--skip-invalid", action="store_true", help="add the usable photos, list the rest")
    add.set_defaults(func=_datasets_add)

    listing = actions.add_parser("list", help="datasets, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(func=_datasets_list)

    show = actions.add_parser("show", help="one dataset: counts per class and the models trained on it")
    show.add_argument("dataset_id")
    show.set_defaults(func=_datasets_show)


def _add_train_command(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train on FOLDER/<class>/<images> (or an archive of class folders), or on --dataset ID, "
        "and register the model",
    )
    train.add_argument("folder", type=Path, nargs="?")
    train.add_argument("--dataset", help="train on this dataset's labelled photos as they are now")
    train.add_argument("--epochs", type=int, help="default 5 (1..200)")
    train.add_argument("--backbone", help="a backbone of GET / (default: resnet18, or its fallback)")
    train.add_argument("--test-split", type=float, help="default 0.2 (0.05..0.5)")
    train.add_argument("--seed", type=int)
    train.add_argument("--name")
    train.add_argument("--augment-views", type=int, help="default VT_AUGMENT_VIEWS (0..16)")
    train.add_argument("--skip-invalid", action="store_true", help="train on the usable images, list the rest")
    train.add_argument("--early-stopping", action="store_true", help="stop when the validation loss stalls")
    train.set_defaults(func=_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vision-trainer",
        description="Vision Trainer (settings from VT_* variables). Commands print one JSON document on stdout; "
        "logs and progress go to stderr.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

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

    _add_dataset_commands(commands)
    _add_train_command(commands)

    predict = commands.add_parser(
        "predict",
        help="classify images, or every image of folders; sub-folders named after the model's "
        "classes also give the accuracy",
    )
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
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `vision-trainer ... | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 1
    except (ServiceError, CommandError) as exc:
        return _refuse(exc.code, exc.detail, getattr(exc, "errors", None))
    except MLError as exc:
        return _refuse(exc.code, str(exc))


if __name__ == "__main__":
    sys.exit(main())

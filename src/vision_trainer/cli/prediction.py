"""``vision-trainer predict``: classify files and folders; sub-folders named after the model's classes
are scored too."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import CommandError, bar, emit, note, open_services
from .folders import images_in, note_skipped, sub_folders

if TYPE_CHECKING:
    from ..services.context import Services

PREDICT_BATCH = 32


def _inputs(paths: Sequence[Path], class_names: Sequence[str]) -> list[tuple[Path, str | None]]:
    """Each file to classify with its expected label: the class a folder's sub-folder is named after
    (matched ignoring case), else None. Files named on the command line are always tried."""
    classes = {name.casefold(): name for name in class_names}
    inputs: list[tuple[Path, str | None]] = []
    skipped: list[dict[str, Any]] = []
    for path in paths:
        if path.is_dir():
            inputs += [(p, None) for p in images_in(path, skipped)]
            for sub in sub_folders(path):
                expected = classes.get(sub.name.casefold())
                if expected is None:
                    note(f"{sub} is not named after a class of the model; its photos are classified, not scored")
                inputs += [(p, expected) for p in images_in(sub, skipped)]
        else:
            inputs.append((path, None))
    note_skipped(skipped)
    if not inputs:
        raise CommandError("no images to classify: give image files, or folders of them", code="no_images")
    return inputs


def _predict(args: argparse.Namespace) -> int:
    from ..services import prediction

    with open_services() as services:
        model_id = prediction.resolve_model_id(services, args.model)
        class_names = prediction.load_predictor(services, model_id).class_names
        inputs = _inputs(args.images, class_names)
        entries = []
        with bar(len(inputs), "img", "predicting") as progress:
            for start in range(0, len(inputs), PREDICT_BATCH):
                chunk = inputs[start : start + PREDICT_BATCH]
                entries += _predict_chunk(services, model_id, chunk, args)
                progress.update(len(chunk))
    document: dict[str, Any] = {
        "model_id": model_id,
        "class_names": class_names,
        "count": len(entries),
        "predictions": entries,
    }
    if any("expected" in e for e in entries):
        document["accuracy"] = _accuracy(entries, class_names)
    emit(document)
    failed = [e for e in entries if "error" in e]
    for entry in failed:
        note(f"error ({entry['error']['code']}): {entry['error']['detail']}")
    return 1 if failed else 0


def _read(chunk: Sequence[tuple[Path, str | None]]) -> tuple[list[tuple[str, bytes]], dict[str, dict[str, str]]]:
    """The chunk's files as ``(name, bytes)``, and the error of each that could not be read."""
    readable, unreadable = [], {}
    for path, _ in chunk:
        try:
            readable.append((str(path), path.read_bytes()))
        except OSError as exc:
            unreadable[str(path)] = {"code": "unreadable_file", "detail": f"{str(path)!r}: {exc.strerror or exc}"}
    return readable, unreadable


def _predict_chunk(
    services: Services, model_id: str, chunk: Sequence[tuple[Path, str | None]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    from ..services import prediction

    readable, unreadable = _read(chunk)
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
    from ..ml.metrics import classification_report

    scored = [e for e in entries if "expected" in e and "error" not in e]
    # An answer may be no class of the model ("unknown" under --min-confidence): it gets a column too.
    names = list(dict.fromkeys([*class_names, *(e["prediction"] for e in scored)]))
    index = {name: i for i, name in enumerate(names)}
    report = classification_report(
        [index[e["expected"]] for e in scored], [index[e["prediction"]] for e in scored], names
    )
    matrix = report["confusion_matrix"]
    known = [(i, name) for i, name in enumerate(class_names) if report["per_class"][name]["support"]]
    return {
        "overall": report["accuracy"] if scored else None,
        "correct": sum(matrix[i][i] for i in range(len(names))),
        "count": len(scored),
        "errors": sum(1 for e in entries if "expected" in e and "error" in e),
        "per_class": {name: _class_accuracy(report["per_class"][name], matrix[i][i]) for i, name in known},
        "confusion": {name: {names[j]: n for j, n in enumerate(matrix[i]) if n} for i, name in known},
    }


def _class_accuracy(scores: dict[str, Any], correct: int) -> dict[str, Any]:
    """A class's accuracy is its recall: the share of its photos given its name."""
    return {"accuracy": scores["recall"], "correct": correct, "count": scores["support"]}


def add_command(commands: Any) -> None:
    """``predict``, on the top-level sub-parsers ``commands``."""
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

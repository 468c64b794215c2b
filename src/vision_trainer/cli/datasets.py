"""``vision-trainer datasets create | add | list | show``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import emit, note, open_services
from .folders import read_source


def _create(args: argparse.Namespace) -> int:
    from ..services import datasets

    with open_services() as services:
        emit(datasets.create_dataset(services, args.name))
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..services import datasets

    with open_services() as services:
        emit(datasets.list_datasets(services, limit=args.limit, offset=args.offset))
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..services import datasets

    with open_services() as services:
        emit(datasets.get_dataset(services, args.dataset_id))
    return 0


def _add(args: argparse.Namespace) -> int:
    from ..services import datasets

    with open_services() as services:
        datasets.get_dataset(services, args.dataset_id)  # an unknown id is refused before reading any photo
        source = read_source(args.path, label=args.label, unlabelled=args.unlabelled, min_classes=1)
        request = datasets.AddImages(groups=source.groups, archive=source.archive, skip_invalid=args.skip_invalid)
        with source.reading():
            added = datasets.add_images(services, args.dataset_id, request)
    added["skipped"] = source.skipped + added["skipped"]
    for entry in added["errors"]:
        note(f"skipped {entry['detail']}")
    note(
        f"added {len(added['added'])} photo(s), {len(added['duplicates'])} duplicate(s) not stored again; "
        f"dataset version {added['version']}"
    )
    emit(added)
    return 0


def add_commands(commands: Any) -> None:
    """``datasets`` and its actions, on the top-level sub-parsers ``commands``."""
    datasets = commands.add_parser("datasets", help="create, fill and list datasets (train them with train --dataset)")
    actions = datasets.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="a new empty dataset")
    create.add_argument("name")
    create.set_defaults(func=_create)

    _add_add_action(actions)

    listing = actions.add_parser("list", help="datasets, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(func=_list)

    show = actions.add_parser("show", help="one dataset: counts per class and the models trained on it")
    show.add_argument("dataset_id")
    show.set_defaults(func=_show)


def _add_add_action(actions: Any) -> None:
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
    add.set_defaults(func=_add)

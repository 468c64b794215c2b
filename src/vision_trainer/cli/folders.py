"""Files on disk -> uploads: a folder of class sub-folders, a folder of one class or of unlabelled photos, or
an archive file. Photos are opened only when the service reads them, and counted on a bar as they are."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .common import CommandError, bar, note

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..services.datasets import ImageGroup
    from ..services.uploads import Upload

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class LazyFile(io.RawIOBase):
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


def images_in(folder: Path, skipped: list[dict[str, Any]]) -> list[Path]:
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


def sub_folders(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def note_skipped(skipped: list[dict[str, Any]]) -> None:
    for entry in skipped:
        note(f"skipped {entry['detail']}")


def _class_folders(root: Path, *, minimum: int) -> dict[str, Path]:
    if not root.is_dir():
        raise CommandError(f"{root} is not a folder; give a folder with one sub-folder of images per class")
    classes = {d.name: d for d in sub_folders(root)}
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
            self.bar = bar(self.total, "img", "reading")
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Source:
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

    def uploads(self, paths: list[Path]) -> list[Upload]:
        from ..services.uploads import Upload

        return [Upload(p.name, cast(BinaryIO, LazyFile(p, self.ticker))) for p in paths]


def read_source(path: Path, *, label: str | None, unlabelled: bool, min_classes: int) -> Source:
    """A folder (one sub-folder per class, or one class with ``label``, or unlabelled) or an archive file."""
    if not path.exists():
        raise CommandError(f"{path} does not exist; give a folder or a zip, tar or tar.gz archive of class folders")
    if path.is_file():
        return _archive_source(path, label=label, unlabelled=unlabelled)
    if label is not None or unlabelled:
        source = _one_class_source(path, label)
    else:
        source = _class_folders_source(path, min_classes)
    note_skipped(source.skipped)
    return source


def _archive_source(path: Path, *, label: str | None, unlabelled: bool) -> Source:
    from ..services.uploads import Upload

    if label is not None or unlabelled:
        raise CommandError(
            "an archive carries its labels as class folders; --label and --unlabelled are for folders",
            code="invalid_parameter",
        )
    return Source(groups=[], archive=Upload(path.name, cast(BinaryIO, LazyFile(path, lambda: None))))


def _one_class_source(path: Path, label: str | None) -> Source:
    from ..services.datasets import ImageGroup

    source = Source(groups=[])
    source.groups = [ImageGroup(label, source.uploads(images_in(path, source.skipped)), "files")]
    return source


def _class_folders_source(path: Path, min_classes: int) -> Source:
    from ..services.datasets import ImageGroup

    classes = _class_folders(path, minimum=min_classes)
    source = Source(groups=[])
    source.groups = [
        ImageGroup(name, source.uploads(images_in(folder, source.skipped)), name) for name, folder in classes.items()
    ]
    if loose := [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]:
        note(
            f"{len(loose)} file(s) directly in {path} are left out: photos go in one sub-folder per class "
            "(or add them with --label or --unlabelled)"
        )
    return source

"""What every command shares: its one JSON document on stdout, notes and bars on stderr, refusals, and the
services on the data dir."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..settings import get_settings

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..services.context import Services


class CommandError(Exception):
    """A command line that cannot be carried out (a missing folder...); printed like a service error."""

    def __init__(self, detail: str, *, code: str = "invalid_path") -> None:
        super().__init__(detail)
        self.detail, self.code = detail, code


def emit(document: Any) -> None:
    """The command's one JSON document, on stdout."""
    print(json.dumps(document, indent=2, ensure_ascii=False))


def note(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # above any bar, never on stdout


def refuse(code: str, detail: str, errors: Sequence[dict[str, Any]] | None = None) -> int:
    """Print a refused request on stderr; returns the exit status (2)."""
    print(f"error ({code}): {detail}", file=sys.stderr)
    for error in errors or []:
        print(f"  {error.get('filename', '')}: {error.get('detail', '')}", file=sys.stderr)
    return 2


def bar(total: int, unit: str, desc: str, *, initial: int = 0) -> tqdm:
    """A progress bar on stderr counting ``unit``."""
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
def open_services() -> Iterator[Services]:
    """The services on the data dir of the settings, closed when the command is done."""
    from ..services.context import Services

    services = Services.create(get_settings())
    try:
        yield services
    finally:
        services.close()

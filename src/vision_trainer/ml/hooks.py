"""Callbacks from the ML core into whoever runs it: progress, log lines, cancellation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _noop(*args: object) -> None:
    return None


@dataclass(frozen=True)
class TrainingHooks:
    """Callbacks into the caller: progress ``(phase, done, total, epoch)``, log lines, cancellation."""

    progress: Callable[[str, int, int, int | None], None] = _noop
    log: Callable[[str], None] = _noop
    should_stop: Callable[[], bool] = lambda: False

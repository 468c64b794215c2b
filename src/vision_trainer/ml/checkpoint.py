"""``trained_model.pth``: a dict of plain types and tensors, written atomically, read with weights_only."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model_state_dict", "class_names")


def build_checkpoint(
    *,
    model_state_dict: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    backbone: str,
    preprocessing: Mapping[str, Any],
    temperature: float = 1.0,
    metrics: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dict described in DESIGN.md (tensors moved to the CPU)."""
    return {
        "format_version": FORMAT_VERSION,
        "model_state_dict": {k: v.detach().cpu() for k, v in model_state_dict.items()},
        "class_names": list(class_names),
        "backbone": backbone,
        "preprocessing": dict(preprocessing),
        "temperature": float(temperature),
        "metrics": dict(metrics) if metrics is not None else None,
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(),
    }


def save_checkpoint(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` through a temporary file and a rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(checkpoint), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path | Any) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code from the file ever runs).

    Raises:
        CheckpointError: unreadable, not a dict, or missing ``model_state_dict``/``class_names``.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or malicious files
        raise CheckpointError(f"not a loadable checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in REQUIRED_KEYS):
        raise CheckpointError(f"checkpoint must be a dict with keys {', '.join(REQUIRED_KEYS)}")
    return checkpoint

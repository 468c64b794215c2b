"""``trained_model.pth``: a dict of plain types and tensors, written atomically, read with weights_only."""

from __future__ import annotations

import math
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .images import sniff_format

FORMAT_VERSION = 1
HEAD_FORMAT_VERSION = 2
REQUIRED_KEYS = ("model_state_dict", "class_names")
HEAD_KEYS = ("head_state_dict", "class_names", "backbone", "backbone_fingerprint")


def build_checkpoint(
    *,
    model_state_dict: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    backbone: str,
    preprocessing: Mapping[str, Any],
    temperature: float = 1.0,
    metrics: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
    feature_stages: Sequence[str] = (),
) -> dict[str, Any]:
    """Assemble the checkpoint dict described in DESIGN.md (tensors moved to the CPU); a model whose
    head reads pooled stages after the final features names them in ``feature_stages``."""
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "model_state_dict": {k: v.detach().cpu() for k, v in model_state_dict.items()},
        "class_names": list(class_names),
        "backbone": backbone,
        "preprocessing": dict(preprocessing),
        "temperature": float(temperature),
        "metrics": dict(metrics) if metrics is not None else None,
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(),
    }
    if feature_stages:
        checkpoint["feature_stages"] = list(feature_stages)
    return checkpoint


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


MAX_ARCHIVE_RECORDS = 100_000


def check_container(path: Path, *, max_total_bytes: int, label: str = "the file") -> None:
    """Refuse a ``torch.save`` zip whose records are compressed or add up to more than ``max_total_bytes``,
    from its directory alone, before ``torch.load`` would inflate them (torch writes its records stored,
    so compression is only ever a bomb). Files that are not zips are left to ``load_checkpoint``.

    Raises:
        CheckpointError: compressed records, too many of them, or too large unpacked.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        return  # load_checkpoint explains what the file is
    if len(records) > MAX_ARCHIVE_RECORDS:
        raise CheckpointError(f"{label} has {len(records)} records; a checkpoint has at most {MAX_ARCHIVE_RECORDS}")
    if compressed := [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]:
        raise CheckpointError(
            f"{label} has compressed records ({compressed[0]!r}); torch.save writes them uncompressed: "
            "send the file torch.save wrote"
        )
    total = sum(r.file_size for r in records)
    if total > max_total_bytes:
        raise CheckpointError(
            f"{label} unpacks to {total / 2**20:.0f} MiB; at most {max_total_bytes / 2**20:g} MiB (VT_MAX_FILE_MB)"
        )


def load_checkpoint(path: Path | Any, *, label: str = "the file", max_total_bytes: int | None = None) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code from the file ever runs).

    Args:
        path: a file path or a binary file object.
        label: how messages name the file (e.g. the client's filename, quoted).
        max_total_bytes: for a path, first refuse compressed records and more than this unpacked
            (see ``check_container``).

    Raises:
        CheckpointError: ``<label> is not a PyTorch checkpoint: <why, in plain words>``, or a dict
            without ``model_state_dict``/``class_names``.
    """
    if max_total_bytes is not None and isinstance(path, (str, Path)):
        check_container(Path(path), max_total_bytes=max_total_bytes, label=label)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or malicious files
        raise CheckpointError(f"{label} is not a PyTorch checkpoint: {_why_unloadable(path, exc)}") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in REQUIRED_KEYS):
        found = (
            f"keys {', '.join(map(str, list(checkpoint)[:8]))}"
            if isinstance(checkpoint, dict)
            else f"a {type(checkpoint).__name__}"
        )
        raise CheckpointError(
            f"{label} is a PyTorch file but not a model checkpoint: it must be a dict with keys "
            f"{', '.join(REQUIRED_KEYS)} (found {found})"
        )
    return checkpoint


_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _why_unloadable(source: Path | Any, exc: Exception) -> str:
    """Say what the file is instead, without torch's internals (``[enforce fail at ...]``, miniz)."""
    head = _head(source)
    blocked = _BLOCKED_GLOBAL.search(str(exc))
    if blocked:
        return (
            f"it would run code or build objects other than tensors and plain values ({blocked.group(1)}); "
            "only files that torch.load(weights_only=True) accepts are read"
        )
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        if "central directory" in str(exc):
            return "it is a damaged or truncated zip archive (was the file cut short?)"
        return "it is a zip archive, but not one written by torch.save (send the .pth file itself, not a zip of it)"
    kind = sniff_format(head)
    if kind:
        return f"it is a {kind} image"
    if head.startswith(b"\x80"):
        return "it is a Python pickle that torch.load cannot read as a checkpoint"
    if _looks_like_text(head):
        return "it looks like a text file"
    return "its content is neither a torch.save zip archive nor a legacy torch pickle"


def _head(source: Path | Any, size: int = 512) -> bytes:
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as handle:
                return handle.read(size)
        source.seek(0)
        return source.read(size)
    except (OSError, AttributeError, ValueError):
        return b""


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0


def check_temperature(value: Any) -> float:
    """A checkpoint's temperature as a float: missing means 1.0; else a finite number in
    [``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``] (NaN would make every prediction ``unknown``).

    Raises:
        CheckpointError: not a number, not finite, or out of range.
    """
    if value is None:
        return 1.0
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype.is_floating_point:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"temperature must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        raise CheckpointError(f"temperature must be between {MIN_TEMPERATURE} and {MAX_TEMPERATURE}, got {value!r}")
    return float(value)


def build_head_checkpoint(
    *,
    head_state_dict: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    backbone: str,
    backbone_fingerprint: str,
    preprocessing: Mapping[str, Any],
    temperature: float = 1.0,
    metrics: Mapping[str, Any] | None = None,
    feature_stages: Sequence[str] = (),
    tuned_state_dict: Mapping[str, torch.Tensor] | None = None,
    tune_cut: str | None = None,
) -> dict[str, Any]:
    """A model as stored: the checkpoint of ``build_checkpoint`` with only the head's weights, and the
    fingerprint of the shared backbone weights it was trained on (format 2). A head that reads pooled
    stages after the final features names them in ``feature_stages`` (``ml.depths``); a head of the final
    features alone has no such key, so its full checkpoint stays the seed's shape. A model whose top was tuned
    (``ml.tuning``) stores the tuned layers under the backbone's own keys in ``tuned_state_dict`` and the cut
    point in ``tune_cut``; the frozen trunk below it is the shared backbone's."""
    checkpoint = build_checkpoint(
        model_state_dict=head_state_dict,
        class_names=class_names,
        backbone=backbone,
        preprocessing=preprocessing,
        temperature=temperature,
        metrics=metrics,
        feature_stages=feature_stages,
    )
    checkpoint["head_state_dict"] = checkpoint.pop("model_state_dict")
    checkpoint.update(format_version=HEAD_FORMAT_VERSION, backbone_fingerprint=backbone_fingerprint)
    if tuned_state_dict:
        checkpoint["tuned_state_dict"] = {k: v.detach().cpu() for k, v in tuned_state_dict.items()}
        checkpoint["tune_cut"] = tune_cut
    return checkpoint


def load_head_checkpoint(path: Path) -> dict[str, Any]:
    """Read a stored head (``weights_only=True``). Raises CheckpointError."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"not a loadable head checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in HEAD_KEYS):
        raise CheckpointError(f"a head checkpoint must be a dict with keys {', '.join(HEAD_KEYS)}")
    return checkpoint


def full_checkpoint(head: Mapping[str, Any], backbone_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The seed-loadable ``trained_model.pth`` of a stored head: the backbone's weights under their own
    key names, a tuned top's layers in their place, plus the head's (``fc.weight``/``fc.bias`` for
    resnet18), in format 1."""
    state = {key: value.detach().cpu().contiguous() for key, value in backbone_state.items()}
    tuned = head.get("tuned_state_dict") or {}
    if unknown := [key for key in tuned if key not in state]:
        raise CheckpointError(f"the tuned layers have tensors the backbone lacks: {', '.join(unknown[:5])}")
    state.update(tuned)
    state.update(head["head_state_dict"])
    dropped = ("head_state_dict", "backbone_fingerprint", "tuned_state_dict", "tune_cut")
    checkpoint = {key: value for key, value in head.items() if key not in dropped}
    checkpoint.update(format_version=FORMAT_VERSION, model_state_dict=state)
    return checkpoint

"""What a converter is: one export format, the optional package it needs, how it converts the model's full
torch module, how the result runs in its own runtime and what a client's README says about it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import MLError

# A progress callback: (what is being done, done, total).
Progress = Callable[[str, int, int], None]


class ConverterUnavailableError(MLError, RuntimeError):
    """The converter's optional package is not installed; the message names the pip command."""

    code = "converter_unavailable"

    def __init__(self, fmt: str, extra: str, missing: str) -> None:
        self.fmt, self.extra, self.missing = fmt, extra, missing
        self.pip = f"pip install 'vision-trainer[{extra}]'" if extra else f"pip install {missing}"
        super().__init__(f"the {fmt} export needs the {missing} package, which is not installed here; run: {self.pip}")


@dataclass(frozen=True)
class ConversionInput:
    """What a converter gets besides the module.

    Attributes:
        input_size: Side of the square, normalized NCHW input.
        metadata: The ``vt.*`` properties (class names, preprocessing, backbone, temperature) as strings.
        calibration: Normalized training photos ``[N, 3, S, S]`` for the int8 formats (empty otherwise).
    """

    input_size: int
    metadata: Mapping[str, str]
    calibration: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3, 1, 1))


class Converter(Protocol):
    """One export format. ``convert`` writes the model file(s) into a folder and returns what
    ``metadata.json`` adds for this format (e.g. an int8 input's scale and zero point)."""

    name: str
    extra: str  # the pip extra that installs what it needs: vision-trainer[<extra>]
    packages: tuple[str, ...]  # modules that must import for it to convert (and run, when it runs here)
    quantized: bool  # int8: judged by agreement and accuracy, not by a 1e-4 bound
    runs_here: bool  # False: converted and inspected, but its runtime does not exist on Linux
    description: str

    def convert(self, model: nn.Module, folder: Path, given: ConversionInput, progress: Progress) -> dict[str, Any]:
        """Write the export of ``model`` (eval mode, CPU) into ``folder``."""

    def open(self, folder: Path, metadata: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
        """A function from a normalized float32 batch ``[N, 3, S, S]`` to float logits ``[N, classes]``,
        running the files of ``folder`` in this format's own runtime (not for ``runs_here=False``)."""

    def inspect(self, folder: Path, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """What can be checked of the files without their runtime (shapes, metadata); raises
        ``ExportError`` on a mismatch."""

    def readme(self, metadata: Mapping[str, Any]) -> str:
        """How to run the export in its own runtime, as plain text with code."""


def require(converter: Converter) -> None:
    """Raises ``ConverterUnavailableError`` when a package the converter needs does not import."""
    for module in converter.packages:
        try:
            __import__(module)
        except ImportError:
            raise ConverterUnavailableError(converter.name, converter.extra, module) from None


def per_image(run: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Run a batch-1 program over a batch, one image at a time."""

    def call(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([run(batch[i : i + 1]) for i in range(len(batch))])

    return call


PREPROCESSING_TEXT = """Preprocessing (exactly what the server does): decode as RGB, resize the shorter side to
{resize_size} pixels (bilinear), centre-crop {input_size}x{input_size}, scale to [0, 1], subtract
mean {mean} and divide by std {std} per channel. The output is the temperature-scaled logits: a
softmax gives the confidences the server's /predict reports, in the order of class_names.
"""


def preprocessing_text(metadata: Mapping[str, Any]) -> str:
    return PREPROCESSING_TEXT.format(**metadata)


PYTHON_PREPROCESS = """import json, numpy as np
from PIL import Image
meta = json.load(open("metadata.json"))

def preprocess(path):
    image = Image.open(path).convert("RGB")
    scale = meta["resize_size"] / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    size = meta["input_size"]
    left, top = (image.width - size) // 2, (image.height - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    return ((array - meta["mean"]) / meta["std"]).astype(np.float32)  # HWC

def softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()
"""

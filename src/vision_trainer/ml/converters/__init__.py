"""Export formats beyond ONNX and TorchScript, each a converter in a registry: ``tflite``, ``tflite-int8``,
``openvino``, ``onnx-int8`` and ``coreml``. A converter's heavy package is an optional extra of the
project (``pip install 'vision-trainer[tflite]'``); ``require_converter`` says which one is missing.

A new format is one module with a ``Converter`` (see ``base``) and one line below.
"""

from __future__ import annotations

from .base import ConversionInput, Converter, ConverterUnavailableError, Progress, require
from .coreml import CoreMlConverter
from .onnx_int8 import OnnxInt8Converter, quantize_onnx
from .openvino import OpenVinoConverter
from .tflite import TfliteConverter

_CONVERTERS: dict[str, Converter] = {}


def register_converter(converter: Converter) -> Converter:
    if converter.name in _CONVERTERS:
        raise ValueError(f"an export format named {converter.name!r} is registered already")
    _CONVERTERS[converter.name] = converter
    return converter


def list_converters() -> list[str]:
    return list(_CONVERTERS)


def resolve_converter(name: str) -> Converter:
    """Raises:
    KeyError: no such format (the API only lets registered names through).
    """
    return _CONVERTERS[name]


def require_converter(name: str) -> Converter:
    """The converter of ``name``, once its packages import.

    Raises:
        ConverterUnavailableError: a package it needs is not installed (the message names the pip command).
    """
    converter = resolve_converter(name)
    require(converter)
    return converter


register_converter(TfliteConverter(quantized=False))
register_converter(TfliteConverter(quantized=True))
register_converter(OpenVinoConverter())
register_converter(OnnxInt8Converter())
register_converter(CoreMlConverter())

__all__ = [
    "ConversionInput",
    "Converter",
    "ConverterUnavailableError",
    "Progress",
    "list_converters",
    "quantize_onnx",
    "register_converter",
    "require_converter",
    "resolve_converter",
]

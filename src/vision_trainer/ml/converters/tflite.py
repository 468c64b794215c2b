"""LiteRT (TensorFlow Lite) exports, converted straight from the torch module by litert-torch (no
TensorFlow): ``tflite`` in float32, and ``tflite-int8``, full-integer (int8 input, weights, activations
and output; per-channel weights), calibrated on the model's training photos by PT2E static quantization."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import PYTHON_PREPROCESS, ConversionInput, Progress, per_image, preprocessing_text

FILE = "model.tflite"


class TfliteConverter:
    extra = "tflite"
    packages: tuple[str, ...] = ("litert_torch", "ai_edge_litert")
    runs_here = True

    def __init__(self, *, quantized: bool) -> None:
        self.quantized = quantized
        self.name = "tflite-int8" if quantized else "tflite"
        self.description = (
            "LiteRT full-integer int8 (phones, microcontrollers, Edge TPU-class accelerators)"
            if quantized
            else "LiteRT float32 (Android, iOS, Raspberry Pi, Coral CPU)"
        )

    def convert(self, model: nn.Module, folder: Path, given: ConversionInput, progress: Progress) -> dict[str, Any]:
        import litert_torch

        example = (torch.zeros(1, 3, given.input_size, given.input_size),)
        if not self.quantized:
            progress("converting", 0, 1)
            litert_torch.convert(model, example).export(str(folder / FILE))
            progress("converting", 1, 1)
            return {}
        from litert_torch.quantize import pt2e_quantizer, quant_config
        from torchao.quantization.pt2e import quantize_pt2e

        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
        )
        prepared = quantize_pt2e.prepare_pt2e(torch.export.export(model, example).module(), quantizer)
        photos = given.calibration
        with torch.no_grad():
            for i in range(len(photos)):
                prepared(photos[i : i + 1])
                progress("calibrating", i + 1, len(photos))
        progress("converting", 0, 1)
        quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        config = quant_config.QuantConfig(pt2e_quantizer=quantizer)
        litert_torch.convert(quantized, example, quant_config=config).export(str(folder / FILE))
        progress("converting", 1, 1)
        return _quantization(folder / FILE)

    def open(self, folder: Path, metadata: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(folder / FILE), num_threads=2)
        interpreter.allocate_tensors()
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

        def run(batch: np.ndarray) -> np.ndarray:
            interpreter.set_tensor(source["index"], quantize(batch, source))
            interpreter.invoke()
            return dequantize(interpreter.get_tensor(target["index"]), target)

        return per_image(run)

    def inspect(self, folder: Path, metadata: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def readme(self, metadata: Mapping[str, Any]) -> str:
        size = metadata["input_size"]
        int8 = self.quantized
        int8_out = "output_quantization" in metadata
        quant = (
            "The input is int8: quantize the normalized image with input_quantization from metadata.json,\n"
            "q = clip(round(x / scale) + zero_point, -128, 127).\n"
            + (
                "The output is int8 too: logits = (q_out - zero_point) * scale with output_quantization.\n\n"
                if int8_out
                else "The output is float32 logits.\n\n"
            )
            if int8
            else ""
        )
        feed = (
            'q = meta["input_quantization"]\n'
            'x = np.clip(np.round(x / q["scale"]) + q["zero_point"], -128, 127).astype(np.int8)\n'
            if int8
            else ""
        )
        out = (
            'o = meta["output_quantization"]\n'
            'logits = (interpreter.get_tensor(out["index"]).astype(np.float32) - o["zero_point"]) * o["scale"]\n'
            if int8_out
            else 'logits = interpreter.get_tensor(out["index"])\n'
        )
        return (
            f"{self.description}: model.tflite, input [1, 3, {size}, {size}] (NCHW), output [1, classes].\n\n"
            f"{preprocessing_text(metadata)}\n{quant}"
            "Python (pip install ai-edge-litert numpy pillow; on Android use the LiteRT Interpreter the same way):\n\n"
            f"{PYTHON_PREPROCESS}"
            "from ai_edge_litert.interpreter import Interpreter\n"
            'interpreter = Interpreter(model_path="model.tflite")\n'
            "interpreter.allocate_tensors()\n"
            "inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]\n"
            'x = preprocess("photo.jpg").transpose(2, 0, 1)[None]\n'
            f"{feed}"
            'interpreter.set_tensor(inp["index"], x)\n'
            "interpreter.invoke()\n"
            f"{out}"
            'probs = softmax(logits[0]); print(meta["class_names"][int(probs.argmax())], float(probs.max()))\n'
        )


def quantize(batch: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """A float batch as the tensor ``detail`` (int8 with scale and zero point, or float32) wants it."""
    if detail["dtype"] == np.float32:
        return batch.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(batch / scale) + zero, info.min, info.max).astype(detail["dtype"])


def dequantize(values: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values.astype(np.float32)
    scale, zero = detail["quantization"]
    return (values.astype(np.float32) - zero) * scale


def _quantization(path: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def entry(detail: Mapping[str, Any]) -> dict[str, Any]:
        scale, zero = detail["quantization"]
        return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}

    found = {"input_quantization": entry(source)}
    if target["dtype"] != np.float32:
        found["output_quantization"] = entry(target)
    return found

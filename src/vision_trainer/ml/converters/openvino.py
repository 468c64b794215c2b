"""``openvino``: OpenVINO IR (model.xml + model.bin, float32 weights), converted from the ONNX export,
with the ``vt.*`` metadata in the IR's runtime info."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..runtime import export_onnx
from .base import PYTHON_PREPROCESS, ConversionInput, Progress, preprocessing_text


class OpenVinoConverter:
    name = "openvino"
    extra = "openvino"
    packages: tuple[str, ...] = ("openvino",)
    quantized = False
    runs_here = True
    description = "OpenVINO IR, float32 (Intel CPUs, GPUs and NPUs; edge boxes)"

    def convert(self, model: nn.Module, folder: Path, given: ConversionInput, progress: Progress) -> dict[str, Any]:
        import openvino as ov

        progress("converting", 0, 1)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            source = Path(tmp) / "model.onnx"
            export_onnx(model, source, input_size=given.input_size, output_name="logits")
            converted = ov.convert_model(str(source))
        for key, value in given.metadata.items():
            converted.set_rt_info(value, ["vt", key.removeprefix("vt.")])
        ov.save_model(converted, str(folder / "model.xml"), compress_to_fp16=False)
        progress("converting", 1, 1)
        return {}

    def open(self, folder: Path, metadata: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
        import openvino as ov

        # f32 explicitly: on CPUs with AVX-512 BF16 or AMX, OpenVINO would otherwise compute in bfloat16.
        compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        return lambda batch: request.infer({0: batch.astype(np.float32)})[compiled.output(0)].copy()

    def inspect(self, folder: Path, metadata: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def readme(self, metadata: Mapping[str, Any]) -> str:
        size = metadata["input_size"]
        return (
            f"{self.description}: model.xml + model.bin, input float32 [N, 3, {size}, {size}] (NCHW, any batch),\n"
            "output float32 [N, classes].\n\n"
            f"{preprocessing_text(metadata)}\n"
            "On a CPU with AVX-512 BF16 or AMX OpenVINO computes in bfloat16 unless told otherwise: faster,\n"
            'with confidences that differ in the third digit. INFERENCE_PRECISION_HINT "f32" gives the\n'
            "server's figures.\n\n"
            "Python (pip install openvino numpy pillow):\n\n"
            f"{PYTHON_PREPROCESS}"
            "import openvino as ov\n"
            'compiled = ov.Core().compile_model("model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})\n'
            'x = preprocess("photo.jpg").transpose(2, 0, 1)[None]\n'
            "logits = compiled(x)[compiled.output(0)]\n"
            'probs = softmax(logits[0]); print(meta["class_names"][int(probs.argmax())], float(probs.max()))\n'
        )

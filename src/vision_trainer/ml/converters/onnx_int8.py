"""``onnx-int8``: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations),
calibrated on the model's training photos. The file keeps the float input and output of the float
export and the same ``vt.*`` metadata props."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..runtime import export_onnx
from .base import PYTHON_PREPROCESS, ConversionInput, Progress, preprocessing_text

FILE = "model.onnx"


class OnnxInt8Converter:
    name = "onnx-int8"
    extra = ""  # onnxruntime is one of the service's own dependencies
    packages: tuple[str, ...] = ("onnxruntime",)
    quantized = True
    runs_here = True
    description = "ONNX Runtime int8 (static, per-channel weights; x86 CPUs with VNNI, ARM CPUs)"

    def convert(self, model: nn.Module, folder: Path, given: ConversionInput, progress: Progress) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            source = Path(tmp) / "float.onnx"
            export_onnx(model, source, input_size=given.input_size, output_name="logits")
            return quantize_onnx(source, folder / FILE, given.calibration, given.metadata, progress)

    def open(self, folder: Path, metadata: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / FILE), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda batch: session.run(None, {name: batch.astype(np.float32)})[0]

    def inspect(self, folder: Path, metadata: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def readme(self, metadata: Mapping[str, Any]) -> str:
        size = metadata["input_size"]
        return (
            f"{self.description}: model.onnx, input float32 [N, 3, {size}, {size}] (NCHW, any batch), output\n"
            "float32 [N, classes]. The file carries the same vt.* metadata props as the float ONNX export;\n"
            "input_quantization in metadata.json is the scale and zero point the model quantizes its input with.\n\n"
            f"{preprocessing_text(metadata)}\n"
            "Python (pip install onnxruntime numpy pillow):\n\n"
            f"{PYTHON_PREPROCESS}"
            "import onnxruntime as ort\n"
            'session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])\n'
            'x = preprocess("photo.jpg").transpose(2, 0, 1)[None]\n'
            "logits = session.run(None, {session.get_inputs()[0].name: x})[0]\n"
            'probs = softmax(logits[0]); print(meta["class_names"][int(probs.argmax())], float(probs.max()))\n'
        )


def quantize_onnx(
    source: Path,
    target: Path,
    calibration: torch.Tensor,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Statically quantize the float ONNX file ``source`` into ``target`` (QDQ, per-channel int8 weights,
    uint8 activations, min-max ranges over ``calibration``, one normalized photo at a time).

    Returns:
        ``{"input_quantization": {dtype, scale, zero_point}}`` of the quantized input.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.items: Iterator[int] = iter(range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.items, None)
            if i is None:
                return None
            if progress is not None:
                progress("calibrating", i + 1, len(calibration))
            return {"input": calibration[i : i + 1].numpy()}

    prepared = target.with_name(f".prepared-{target.name}")
    try:
        # ONNX shape inference suffices for a CNN; the symbolic pass gives up on the pooled stages' concat.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Photos(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
    finally:
        prepared.unlink(missing_ok=True)
    model = onnx.load(str(target))
    if metadata:
        del model.metadata_props[:]
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(target))
    return {"input_quantization": _input_quantization(model)}


def _input_quantization(model: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    graph_input = model.graph.input[0].name
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph_input)
    zero = values[node.input[2]]
    return {"dtype": zero.dtype.name, "scale": float(values[node.input[1]]), "zero_point": int(zero)}

"""``coreml``: a Core ML ML Program (model.mlpackage, float32), converted with coremltools from the
torch module's ``torch.export`` program. Core ML runs on Apple platforms only: here the converted
program is inspected (input and output names, shapes and types, the metadata), not run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..exports import ExportError
from .base import ConversionInput, Progress, preprocessing_text

PACKAGE = "model.mlpackage"


class CoreMlConverter:
    name = "coreml"
    extra = "coreml"
    packages: tuple[str, ...] = ("coremltools",)
    quantized = False
    runs_here = False
    description = "Core ML ML Program, float32 (iOS 16+, macOS 13+)"

    def convert(self, model: nn.Module, folder: Path, given: ConversionInput, progress: Progress) -> dict[str, Any]:
        import coremltools as ct

        progress("converting", 0, 1)
        size = given.input_size
        program = torch.export.export(model, (torch.zeros(1, 3, size, size),)).run_decompositions({})
        converted = ct.convert(
            program,
            inputs=[ct.TensorType(name="input", shape=(1, 3, size, size))],
            outputs=[ct.TensorType(name="logits")],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=ct.precision.FLOAT32,
        )
        converted.short_description = "Vision Trainer image classifier: temperature-scaled logits"
        for key, value in given.metadata.items():
            converted.user_defined_metadata[key] = value
        converted.save(str(folder / PACKAGE))
        progress("converting", 1, 1)
        return {}

    def open(self, folder: Path, metadata: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
        raise ExportError("Core ML programs run on macOS and iOS only")

    def inspect(self, folder: Path, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Check the saved program's interface and metadata against the model's.

        Raises:
            ExportError: a name, shape, type or metadata value differs.
        """
        import coremltools as ct

        loaded = ct.models.MLModel(str(folder / PACKAGE), skip_model_load=True)
        description = loaded.get_spec().description
        size, classes = int(metadata["input_size"]), len(metadata["class_names"])
        found = {
            "input": _array(description.input[0]),
            "output": _array(description.output[0]),
        }
        expected = {
            "input": {"name": "input", "shape": [1, 3, size, size], "dtype": "FLOAT32"},
            "output": {"name": "logits", "shape": [1, classes], "dtype": "FLOAT32"},
        }
        stored = dict(loaded.user_defined_metadata)
        wrong = [key for key, value in metadata_props(metadata).items() if stored.get(key) != value]
        if found != expected or wrong:
            raise ExportError(
                f"the coreml program does not match the model: interface {found} (expected {expected}), "
                f"metadata differing: {wrong or 'none'}; it was not kept"
            )
        return {**found, "metadata_checked": sorted(metadata_props(metadata))}

    def readme(self, metadata: Mapping[str, Any]) -> str:
        size = metadata["input_size"]
        return (
            f'{self.description}: model.mlpackage, input "input" float32 [1, 3, {size}, {size}] (NCHW),\n'
            'output "logits" float32 [1, classes]. The vt.* metadata is in the model\'s user-defined metadata.\n'
            "Converted on Linux, where Core ML cannot run: the server checked the program's inputs, outputs\n"
            "and metadata, not its predictions. Compare a few photos with /predict on your device.\n\n"
            f"{preprocessing_text(metadata)}\n"
            "Swift (add model.mlpackage to an Xcode project; Xcode generates the class):\n\n"
            "let model = try MLModel(contentsOf: compiledURL)\n"
            f"let input = try MLMultiArray(shape: [1, 3, {size}, {size}], dataType: .float32)  // fill as above\n"
            'let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: ["input": input]))\n'
            'let logits = out.featureValue(for: "logits")!.multiArrayValue!  // softmax -> confidences\n\n'
            "Python on macOS (pip install coremltools numpy pillow):\n\n"
            "import coremltools as ct\n"
            'model = ct.models.MLModel("model.mlpackage")\n'
            'logits = model.predict({"input": x})["logits"]  # x: preprocessed, float32 [1, 3, H, W]\n'
        )


def metadata_props(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The ``vt.*`` strings a program of this model must carry (what ``ml.exports.export_metadata`` wrote)."""
    return dict(metadata["props"])


def _array(feature: Any) -> dict[str, Any]:
    array = feature.type.multiArrayType
    dtype = type(array).ArrayDataType.Name(array.dataType)
    return {"name": feature.name, "shape": [int(d) for d in array.shape], "dtype": dtype}

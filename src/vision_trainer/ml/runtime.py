"""Where backbone forwards run: ONNX Runtime or OpenVINO on the CPU, PyTorch on CUDA (and as the fallback).

A frozen backbone is exported to ONNX once, cached on disk under a key made of the backbone name and
a hash of its weights, and its inference session (ONNX Runtime, or OpenVINO compiled from the same
file) is shared by training and prediction.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import nn

RuntimeKind = Literal["onnx", "openvino", "openvino-bf16", "torch"]
RUNTIME_KINDS: tuple[RuntimeKind, ...] = ("onnx", "openvino", "openvino-bf16", "torch")


class FeatureExtractor(Protocol):
    """Maps a normalized image batch ``[N, 3, H, W]`` to pooled features ``[N, F]`` (float32, CPU or device).

    ``batch_size`` is how many images it takes per call at best; training and prediction feed it that many.
    """

    batch_size: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class RuntimeOptions:
    """Args:
    kind: ``onnx`` (ONNX Runtime, float32), ``openvino`` (OpenVINO, float32), ``openvino-bf16`` (OpenVINO
        computing in bfloat16, for CPUs with AVX-512 BF16 or AMX) or ``torch``.
    device: torch device string; ONNX Runtime and OpenVINO are used on the CPU only.
    cache_dir: Where exported ONNX backbones are kept (required for every kind but ``torch``).
    """

    kind: RuntimeKind = "torch"
    device: str = "cpu"
    cache_dir: Path | None = None

    @property
    def batch_size(self) -> int:
        """Images per backbone forward pass for this runtime (``OnnxExtractor``/``TorchExtractor.batch_size``)."""
        return TorchExtractor.batch_size if self.kind == "torch" else OnnxExtractor.batch_size


def onnx_available() -> bool:
    return _importable("onnxruntime")


def openvino_available() -> bool:
    return _importable("openvino")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), from ``/proc/cpuinfo``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# What ``auto`` picks on the CPU, best first (bench/runtimes.py measures them side by side; README,
# Performance). OpenVINO in bf16 ran EfficientNet-Lite0 about twice as fast as ONNX Runtime at batch 8, but
# its features depend on the batch a photo comes in (the same photo alone and in a /predict/batch of 20
# crossed the novelty threshold one way and the other, and a 1-epoch head on few photos flipped its
# answer), and it lost exactly the half point allowed on EuroSAT: it stays a choice (VT_RUNTIME=openvino-bf16),
# not the default. OpenVINO in float32 was not faster than ONNX Runtime on this CPU, nor was ONNX Runtime
# int8, whose features move most.
AUTO_ORDER: tuple[RuntimeKind, ...] = ("onnx", "openvino", "torch")
_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino", "openvino-bf16": "openvino"}


def runtime_available(kind: str) -> bool:
    """Whether ``kind`` can run here (its package is installed; bf16 also needs a CPU that has it)."""
    if kind == "torch":
        return True
    if kind == "openvino-bf16" and not cpu_has_bf16():
        return False
    package = _PACKAGES.get(kind)
    return package is not None and _importable(package)


def resolve_runtime(requested: str, device: str) -> RuntimeKind:
    """The runtime backbone forwards use. ``auto`` takes the first of ``AUTO_ORDER`` that is installed on
    the CPU (PyTorch on CUDA); a named one is used as asked (PyTorch on CUDA whatever was asked).

    Raises:
        ValueError: the named runtime cannot run here (its package is missing, or bf16 on a CPU without it).
    """
    if requested == "torch" or device != "cpu":
        return "torch"
    if requested == "auto":
        return next(kind for kind in AUTO_ORDER if runtime_available(kind))
    if requested not in RUNTIME_KINDS:
        raise ValueError(f"unknown runtime {requested!r}; choose one of auto, {', '.join(RUNTIME_KINDS)}")
    if not runtime_available(requested):
        need = "a CPU with AVX-512 BF16 or AMX and " if requested == "openvino-bf16" else ""
        raise ValueError(f"runtime {requested!r} needs {need}the {_PACKAGES[requested]} package")
    return requested


class TorchExtractor:
    """A frozen module run under ``inference_mode`` with channels-last inputs; on CUDA with float16
    autocast (AMP) and non-blocking copies from pinned memory."""

    batch_size = 16

    def __init__(self, module: nn.Module, device: str) -> None:
        self.module = module.eval().to(device).to(memory_format=torch.channels_last)
        self.device = device
        self.amp = device.startswith("cuda")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            batch = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            return self.module(batch).float()


class OnnxExtractor:
    """An ONNX Runtime session with the same call signature as ``TorchExtractor`` (CPU tensors out).

    Batches of 8 with ONNX Runtime's memory patterns (one allocation plan per input shape, planned
    once and kept): measured on 2 cores against batch 16 without them, EfficientNet-Lite0 ran 9 %
    faster per image, Lite2 13 %, ResNet-18 the same, and a session that has seen every batch size up
    to its own held less memory (Lite0 344 MB instead of 429, Lite2 362 instead of 493, ResNet-18 254
    instead of 299); patterns at batch 16 cost 170 MB more for Lite0, at batch 32 400 MB.
    """

    batch_size = 8

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.enable_mem_pattern = True
        # Spinning intra-op threads burn the cores that image decoding and the API need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


class OpenVinoExtractor:
    """OpenVINO compiled from the same ONNX file, with the same call signature as ``OnnxExtractor``.

    The inference precision is always set explicitly: on a CPU with AVX-512 BF16 or AMX OpenVINO otherwise
    computes in bfloat16 by default, whose features differ from float32 ones in the third digit.
    One infer request per calling thread (a request is not safe to share between threads).
    """

    batch_size = 8

    def __init__(self, path: Path, *, precision: Literal["f32", "bf16"] = "f32") -> None:
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.precision = precision
        self.path = path
        self._local = threading.local()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        array = images.detach().cpu().contiguous().numpy()
        result = request.infer({0: array}, share_inputs=True)
        return torch.from_numpy(result[self.compiled.output(0)].copy())


def state_dict_hash(state: Mapping[str, torch.Tensor]) -> str:
    """A content hash of tensors (names, shapes, values), stable across processes."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


_module_hashes: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_module_hashes_lock = threading.Lock()


def frozen_module_hash(module: nn.Module) -> str:
    """``state_dict_hash`` of a module whose weights never change, computed once per module object
    (hashing ResNet-18's 45 MB took a few hundredths of a second of every job)."""
    with _module_hashes_lock:
        if module not in _module_hashes:
            _module_hashes[module] = state_dict_hash(module.state_dict())
        return _module_hashes[module]


def export_onnx(
    module: nn.Module,
    path: Path,
    *,
    input_size: int,
    output_name: str | Sequence[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Export ``module`` (eval mode, CPU) with a dynamic batch axis, atomically, with metadata props;
    ``output_name`` names its output, or its outputs in order."""
    outputs = [output_name] if isinstance(output_name, str) else list(output_name)
    import onnx

    module = module.eval().cpu()
    example = torch.zeros(1, 3, input_size, input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                tmp_name,
                input_names=["input"],
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in ["input", *outputs]},
                opset_version=17,
                dynamo=False,
            )
        if metadata:
            model = onnx.load(tmp_name)
            for key, value in metadata.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(model, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


_sessions: dict[tuple[Path, str], OnnxExtractor | OpenVinoExtractor] = {}
_sessions_lock = threading.Lock()


def build_extractor(backbone: nn.Module, *, name: str, input_size: int, options: RuntimeOptions) -> FeatureExtractor:
    """A feature extractor for a frozen ``backbone`` whose head is ``nn.Identity``.

    Every kind but ``torch`` runs the backbone exported once per (name, weights) to ONNX in
    ``options.cache_dir``; one session (or compiled OpenVINO model) per file and kind is shared by every
    caller of this process.
    """
    if options.kind == "torch":
        return TorchExtractor(backbone, options.device)
    if options.cache_dir is None:
        raise ValueError(f"the {options.kind} runtime needs a cache_dir for exported backbones")
    path = options.cache_dir / f"{name}-{frozen_module_hash(backbone)[:20]}.onnx"
    with _sessions_lock:
        extractor = _sessions.get((path, options.kind))
        if extractor is None:
            if not path.is_file():
                export_onnx(backbone, path, input_size=input_size, output_name="features")
            extractor = _sessions[(path, options.kind)] = _open_session(path, options.kind)
        return extractor


def _open_session(path: Path, kind: RuntimeKind) -> OnnxExtractor | OpenVinoExtractor:
    if kind == "openvino":
        return OpenVinoExtractor(path, precision="f32")
    if kind == "openvino-bf16":
        return OpenVinoExtractor(path, precision="bf16")
    return OnnxExtractor(path)

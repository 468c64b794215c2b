"""Where the model looked: class activation maps on the backbone's last feature map.

For a linear head on globally pooled features the map is exact (Zhou et al., "Learning Deep Features for
Discriminative Localization", 2016): the logit of class c is ``mean_ij(sum_k w_ck A_kij) + b_c``, so
``sum_k w_ck A_k`` is how much each place of the photo added to it. Features that follow the final ones
with pooled earlier stages add evidence of their own; the map shows the final features' share. When the head's input is not that
pooled map alone (tuned layers, features from several depths) the weights come from the gradient of the
logit instead (Grad-CAM, Selvaraju et al., 2017), which for the plain linear head gives the same map.

The last feature map is found once per backbone module by one probe forward: the module that finishes
last among those whose output is still a spatial map (``layer4`` of a ResNet, ``bn2`` of an EfficientNet).
On the CPU the backbone is exported once more to ONNX with that map as a second output, so a heatmap costs
one forward pass, as a prediction does.
"""

from __future__ import annotations

import base64
import io
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from .runtime import RuntimeOptions, export_onnx, frozen_module_hash, onnx_available

# (features [N, F], last feature map [N, K, h, w]) of a normalized batch
MapForward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_layers: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_layers_lock = threading.Lock()


def feature_map_layer(module: nn.Module, input_size: int) -> str:
    """Name of the submodule whose output is the backbone's last spatial feature map (probed once per module)."""
    with _layers_lock:
        if module in _layers:
            return _layers[module]
        finished: list[tuple[str, tuple[int, ...]]] = []
        handles = [
            sub.register_forward_hook(
                lambda _m, _i, out, name=name: (
                    finished.append((name, tuple(out.shape))) if isinstance(out, torch.Tensor) else None
                )
            )
            for name, sub in module.named_modules()
            if name
        ]
        device = next(module.parameters()).device
        try:
            with torch.inference_mode():
                module(torch.zeros(1, 3, input_size, input_size, device=device))
        finally:
            for handle in handles:
                handle.remove()
        spatial = [name for name, shape in finished if len(shape) == 4 and shape[2] > 1 and shape[3] > 1]
        if not spatial:
            raise ValueError("the backbone has no spatial feature map to explain")
        _layers[module] = spatial[-1]
        return spatial[-1]


class WithFeatureMap(nn.Module):
    """A backbone that also returns its last feature map: ``x -> (features, map)``."""

    def __init__(self, module: nn.Module, layer: str) -> None:
        super().__init__()
        self.module = module
        self.layer = dict(module.named_modules())[layer]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            features = self.module(x)
        finally:
            handle.remove()
        return features, captured[-1]


class _TorchMaps:
    """The map forward on PyTorch (CUDA, or where ONNX Runtime is not used); one caller at a time, since the
    capturing hook sits on the shared module."""

    def __init__(self, module: nn.Module, layer: str, device: str) -> None:
        self.wrapped = WithFeatureMap(module, layer)
        self.device = device
        self.lock = threading.Lock()

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.lock, torch.inference_mode():
            features, fmap = self.wrapped(batch.to(self.device))
        return features.float().cpu(), fmap.float().cpu()


class _OnnxMaps:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, fmap = self.session.run(None, {self.input_name: batch.detach().cpu().contiguous().numpy()})
        return torch.from_numpy(features), torch.from_numpy(fmap)


class _OpenVinoMaps:
    """The same exported file compiled by OpenVINO at the runtime's precision (one request per thread)."""

    def __init__(self, path: Path, precision: str) -> None:
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._local = threading.local()

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({0: batch.detach().cpu().contiguous().numpy()}, share_inputs=True)
        features, fmap = (torch.from_numpy(result[self.compiled.output(i)].copy()) for i in (0, 1))
        return features, fmap


def _openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


_sessions: dict[tuple[Path, str], MapForward] = {}
_sessions_lock = threading.Lock()


def build_map_forward(module: nn.Module, *, name: str, input_size: int, options: RuntimeOptions) -> MapForward:
    """A forward that gives features and the last feature map together, on the runtime ``options`` names.

    On the CPU the backbone is exported once per (name, weights) with the map as a second output, into
    ``options.cache_dir``, and run by the runtime ``options`` names (OpenVINO at its precision, else ONNX
    Runtime); its session is shared by every caller of this process. PyTorch runs it on CUDA, with the
    ``torch`` runtime, or when neither runtime is installed.
    """
    layer = feature_map_layer(module, input_size)
    openvino = options.kind.startswith("openvino") and _openvino_available()
    if options.kind == "torch" or options.device != "cpu" or options.cache_dir is None:
        return _TorchMaps(module, layer, options.device)
    if not openvino and not onnx_available():
        return _TorchMaps(module, layer, options.device)
    path = options.cache_dir / f"{name}-{frozen_module_hash(module)[:20]}-map.onnx"
    precision = "bf16" if options.kind == "openvino-bf16" else "f32"
    key = (path, f"openvino-{precision}" if openvino else "onnx")
    with _sessions_lock:
        forward = _sessions.get(key)
        if forward is None:
            if not path.is_file():
                export_onnx(
                    WithFeatureMap(module, layer), path, input_size=input_size, output_name=("features", "feature_map")
                )
            forward = _sessions[key] = _OpenVinoMaps(path, precision) if openvino else _OnnxMaps(path)
        return forward


def pools_map(features: torch.Tensor, feature_map: torch.Tensor) -> bool:
    """Whether the first columns of ``features`` are ``feature_map`` average-pooled (the final features of
    a frozen backbone, alone or followed by pooled earlier stages): then a linear head's weights over those
    columns give the exact class activation map."""
    channels = feature_map.shape[1]
    if features.ndim != 2 or features.shape[1] < channels:
        return False
    pooled = feature_map.float().mean(dim=(2, 3))
    return bool(torch.allclose(features[:, :channels].float(), pooled, rtol=1e-3, atol=1e-4))


def class_activation_maps(feature_map: torch.Tensor, weight: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
    """Exact CAMs of a linear head on the pooled ``feature_map``: ``relu(sum_k w_ck A_k)`` scaled to [0, 1].

    Args:
        feature_map: ``[N, K, h, w]``.
        weight: ``[C, K]`` the head's weights.
        classes: The class to explain per image.
    """
    # Softmax ignores what every class's logit shares, so the map shows what sets the class apart from the
    # others: its weights less the classes' mean (on a plain background, the shared part lit the background).
    contrast = weight - weight.mean(dim=0, keepdim=True)
    chosen = contrast[torch.as_tensor(list(classes), dtype=torch.long)].to(feature_map.dtype)  # [N, K]
    maps = torch.einsum("nk,nkhw->nhw", chosen, feature_map)
    return _unit(maps.clamp(min=0).numpy())


def grad_cams(
    module: nn.Module, layer: str, head: nn.Module, batch: torch.Tensor, classes: Sequence[int]
) -> np.ndarray:
    """Grad-CAM: the map weighted by the spatial mean of the class logit's gradient, for any head and for
    tuned layers after the map. Runs the backbone in PyTorch with gradients from the map on."""
    captured: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.detach().requires_grad_(True)
        captured.append(out)
        return out

    target = dict(module.named_modules())[layer]
    handle = target.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = head(module(batch).float())
            chosen = logits[torch.arange(len(classes)), torch.as_tensor(list(classes))]
            (gradient,) = torch.autograd.grad(chosen.sum(), captured[-1])
    finally:
        handle.remove()
    fmap = captured[-1].detach()
    alpha = gradient.mean(dim=(2, 3), keepdim=True)
    return _unit((alpha * fmap).sum(dim=1).clamp(min=0).float().cpu().numpy())


def _unit(maps: np.ndarray) -> np.ndarray:
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return (maps / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)


def uploaded_size(data: bytes) -> tuple[int, int]:
    """Width and height of an encoded image after its EXIF rotation, from its header alone."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def view_box(size: tuple[int, int], *, resize_size: int, input_size: int) -> tuple[float, float, float, float]:
    """The region of an image of ``size`` that the plain view (shorter side resized to ``resize_size``, centre
    crop of ``input_size``) shows the model, in that image's pixels: ``(left, top, right, bottom)``."""
    width, height = size
    side = input_size * min(width, height) / resize_size
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


@dataclass(frozen=True)
class Heatmap:
    """A map for ``label`` over ``box`` of the uploaded image; ``grid`` rows run top to bottom, values 0-1."""

    label: str
    grid: list[list[float]]
    box: tuple[int, int, int, int]
    png: str

    def peak(self) -> tuple[float, float]:
        """Where the map is highest, in the uploaded image's pixels (the centre of the hottest cell,
        refined on the map upsampled 8 times)."""
        grid = torch.tensor(self.grid)[None, None]
        fine = nn.functional.interpolate(grid, scale_factor=8, mode="bilinear", align_corners=False)[0, 0]
        row, col = divmod(int(fine.argmax()), fine.shape[1])
        left, top, right, bottom = self.box
        return left + (col + 0.5) / fine.shape[1] * (right - left), top + (row + 0.5) / fine.shape[0] * (bottom - top)


def render_heatmap(
    label: str,
    cam: np.ndarray,
    decoded: Image.Image,
    *,
    uploaded: tuple[int, int],
    resize_size: int,
    input_size: int,
    png_side: int = 224,
) -> Heatmap:
    """The answer's heatmap: the grid, the region the model saw in the uploaded image's pixels, and a PNG
    of that region with the map laid over it (base64).

    Args:
        cam: ``[h, w]`` map in [0, 1].
        decoded: The image as decoded for the model (possibly shrunk from the upload).
        uploaded: The uploaded image's size after EXIF rotation.
    """
    box = view_box(decoded.size, resize_size=resize_size, input_size=input_size)
    sx, sy = uploaded[0] / decoded.width, uploaded[1] / decoded.height
    in_upload = (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
    region = decoded.crop((round(box[0]), round(box[1]), round(box[2]), round(box[3]))).resize(
        (png_side, png_side), Image.Resampling.BILINEAR
    )
    heat = Image.fromarray(np.uint8(np.clip(cam, 0, 1) * 255)).resize((png_side, png_side), Image.Resampling.BILINEAR)
    overlay = ImageOps.colorize(heat, black=(0, 0, 160), mid=(255, 220, 0), white=(220, 0, 0))
    alpha = Image.fromarray(np.uint8(80 + 120 * (np.asarray(heat, dtype=np.float32) / 255)))
    blended = Image.composite(overlay, region.convert("RGB"), alpha)
    buffer = io.BytesIO()
    blended.save(buffer, format="PNG", optimize=False, compress_level=1)
    return Heatmap(
        label=label,
        grid=[[round(float(v), 4) for v in row] for row in cam],
        box=in_upload,
        png=base64.b64encode(buffer.getvalue()).decode("ascii"),
    )

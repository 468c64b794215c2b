"""Real photos with planted problems for bench/insights_quality.py, and their cached plain-view features.

A ``Planted`` set is an analysis pool (what a user uploaded, with 10 % of the labels flipped, resized
and re-compressed copies filed under the same or another class, and foreign images: photos of
another domain, a chart, a screenshot, noise) plus a clean hold-out the pool never saw.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vision_trainer.ml.backbones import pretrained_backbone, resolve_backbone
from vision_trainer.ml.data import ImageDataset, LabelledImage, Normalizer, plain_view
from vision_trainer.ml.features import extract_features
from vision_trainer.ml.runtime import RuntimeOptions, build_extractor, resolve_runtime


@dataclass
class Planted:
    """One benchmark dataset.

    ``labels`` are the labels as uploaded (flips applied), ``true_labels`` the real ones (-1 for foreign).
    Copies come last among the pool's photos but one: ``copies`` holds ``(original, copy)`` index pairs.
    """

    name: str
    class_names: list[str]
    paths: list[Path]
    labels: np.ndarray
    true_labels: np.ndarray
    flipped: list[int] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)
    cross_class_copies: list[tuple[int, int]] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)
    holdout_paths: list[Path] = field(default_factory=list)
    holdout_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def clean(self) -> np.ndarray:
        """Indices of the original photos (no copy, no foreign image)."""
        planted = {c for _, c in self.copies} | set(self.foreign)
        return np.array([i for i in range(len(self.paths)) if i not in planted])


def resized_copy(source: Path, target: Path, *, scale: float = 0.9, quality: int = 72) -> Path:
    """``source`` resized to ``scale`` of its size and re-saved as a JPEG of ``quality``."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.resize(size, Image.Resampling.LANCZOS).save(target, "JPEG", quality=quality)
    return target


def chart_image(target: Path, seed: int) -> Path:
    """A bar chart as a plotting library draws it: white background, axes, bars, labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
    ax.bar(["Q1", "Q2", "Q3", "Q4"], rng.uniform(1, 10, 4), color="tab:blue")
    ax.set_title("Revenue by quarter")
    fig.savefig(target, format="png")
    plt.close(fig)
    return target


def screenshot_image(target: Path) -> Path:
    """A desktop-app screenshot: title bar, menu, lines of text on white."""
    image = Image.new("RGB", (640, 400), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 640, 28), fill=(60, 60, 70))
    draw.text((10, 8), "Invoice_2023.xlsx - Spreadsheet", fill="white")
    draw.rectangle((0, 28, 640, 50), fill=(230, 230, 230))
    for row in range(14):
        y = 60 + row * 24
        draw.line((0, y + 18, 640, y + 18), fill=(210, 210, 210))
        draw.text((12, y), f"{row + 1:>3}   Item {row * 7 % 13:>2}   {(row * 37) % 100:>3}.00   EUR", fill="black")
    image.save(target, "PNG")
    return target


def noise_image(target: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(target, "PNG")
    return target


def plant(
    name: str,
    pool: dict[str, list[Path]],
    holdout: dict[str, list[Path]],
    foreign_photos: list[Path],
    work: Path,
    *,
    seed: int = 0,
    flip_fraction: float = 0.1,
    cross_copies: int = 6,
    same_copies: int = 3,
) -> Planted:
    """Build the analysis pool of ``name`` with planted problems (deterministic for ``seed``)."""
    rng = random.Random(seed)
    class_names = list(pool)
    paths = [p for c in class_names for p in pool[c]]
    labels = [i for i, c in enumerate(class_names) for _ in pool[c]]
    true = list(labels)
    n = len(paths)
    flipped = sorted(rng.sample(range(n), round(flip_fraction * n)))
    for i in flipped:
        labels[i] = rng.choice([c for c in range(len(class_names)) if c != true[i]])
    work.mkdir(parents=True, exist_ok=True)
    originals = rng.sample([i for i in range(n) if i not in set(flipped)], cross_copies + same_copies)
    copies, cross = [], []
    for k, i in enumerate(originals):
        target = resized_copy(paths[i], work / f"{name}-{seed}-copy-{k}.jpg")
        other = labels[i] if k >= cross_copies else rng.choice([c for c in range(len(class_names)) if c != true[i]])
        paths.append(target)
        labels.append(other)
        true.append(true[i])
        copies.append((i, len(paths) - 1))
        if other != labels[i]:
            cross.append((i, len(paths) - 1))
    synthetic = [
        chart_image(work / f"{name}-{seed}-chart.png", seed),
        screenshot_image(work / f"{name}-screenshot.png"),
        noise_image(work / f"{name}-{seed}-noise.png", seed),
    ]
    foreign = []
    for path in list(foreign_photos) + synthetic:
        paths.append(path)
        labels.append(rng.randrange(len(class_names)))
        true.append(-1)
        foreign.append(len(paths) - 1)
    held = [p for c in class_names for p in holdout[c]]
    held_labels = [i for i, c in enumerate(class_names) for _ in holdout[c]]
    return Planted(
        name,
        class_names,
        paths,
        np.array(labels),
        np.array(true),
        flipped,
        copies,
        cross,
        foreign,
        held,
        np.array(held_labels),
    )


def plain_features(backbone: str, paths: list[Path], cache: Path, *, batch_size: int = 16) -> tuple[np.ndarray, float]:
    """Plain-view features of ``paths`` as training computes them, kept on disk per backbone and image path.

    Returns:
        ``(features [N, F] float32, seconds spent extracting the ones not on disk yet)``.
    """
    file = cache / f"{backbone}.npz"
    known = dict(np.load(file)) if file.is_file() else {}
    missing = sorted({str(p) for p in paths} - set(known))
    seconds = 0.0
    if missing:
        start = time.perf_counter()
        known.update(zip(missing, _extract(backbone, [Path(p) for p in missing], cache, batch_size)))
        seconds = time.perf_counter() - start
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(file, **known)
    return np.stack([known[str(p)] for p in paths]), seconds


def _extract(backbone: str, paths: list[Path], cache: Path, batch_size: int) -> np.ndarray:
    spec = resolve_backbone(backbone)
    options = RuntimeOptions(kind=resolve_runtime("auto", "cpu"), device="cpu", cache_dir=cache / "onnx")
    extractor = build_extractor(pretrained_backbone(spec), name=spec.name, input_size=spec.input_size, options=options)
    prep = spec.preprocessing()
    items = [LabelledImage(path=p, label=0, sha256="") for p in paths]
    dataset = ImageDataset(items, [plain_view(prep)], draft_size=spec.resize_size)
    features, _ = extract_features(extractor, dataset, normalize=Normalizer(prep), device="cpu", batch_size=batch_size)
    return features.numpy().astype(np.float32)


def split_folder_classes(root: Path, *, pool: int, holdout: int, seed: int) -> tuple[dict[str, list[Path]], ...]:
    """Per class, ``pool`` photos for analysis and the next ``holdout`` for evaluation, shuffled by ``seed``."""
    pools, holds = {}, {}
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        random.Random(seed).shuffle(files)
        pools[folder.name], holds[folder.name] = files[:pool], files[pool : pool + holdout]
    return pools, holds


def load_datasets(datasets: Path, work: Path, *, seed: int = 0) -> list[Planted]:
    """cats_dogs (train pool, val hold-out; flowers as foreign photos) and flowers5 (200 + 100 per
    class; cats and dogs as foreign photos), both with planted problems."""
    cd_train, _ = split_folder_classes(datasets / "cats_dogs" / "train", pool=10_000, holdout=0, seed=seed)
    cd_val, _ = split_folder_classes(datasets / "cats_dogs" / "val", pool=10_000, holdout=0, seed=seed)
    fl_pool, fl_hold = split_folder_classes(datasets / "flowers5", pool=200, holdout=100, seed=seed)
    # Foreign photos come from the other dataset (never from the pool they are planted in).
    flowers_foreign = [files[-1] for files in fl_hold.values()] + [fl_hold["rose"][-2]]
    cats_dogs_foreign = cd_val["cats"][-3:] + cd_val["dogs"][-3:]
    return [
        plant("cats_dogs", cd_train, cd_val, flowers_foreign, work, seed=seed),
        plant("flowers5", fl_pool, fl_hold, cats_dogs_foreign, work, seed=seed),
    ]


def features_of(data: Planted, backbone: str, cache: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(pool features, hold-out features, extraction seconds)`` of ``data`` on ``backbone``."""
    pool, t1 = plain_features(backbone, data.paths, cache)
    held, t2 = plain_features(backbone, data.holdout_paths, cache)
    return pool, held, t1 + t2

"""Trust on photos the model never saw: suspect labels, novelty, the learning curve's projection, heatmaps.

    .venv/bin/python bench/trust.py                       # everything, 3 planting seeds
    .venv/bin/python bench/trust.py --parts suspects --seeds 0

Datasets: cats_dogs (train 400 / val 200), flowers5 (200 per class as the pool, the next 100 held out) and
eurosat_rgb (train 1,394 / val 597). Plain-view features are extracted once per backbone with the training
code and kept under --work.

- suspects: 10 % of the pool's labels flipped at random (per seed); before = the fixed cuts the analysis used
  (p(given) <= 0.2 and p(other) >= 0.5, on efficientnet_lite0), after = confident learning (cleanlab) on
  lite0 and on the backbone the analysis probes with when a dataset has no model (best k-fold accuracy among
  lite0/lite1/lite2). Reported: share of the flipped photos in the top 2x(flipped) of the ranking,
  precision of the top (flipped), the listed suspects and their precision.
- novelty: the training photos' reference calibrated at 5 % (ml.novelty), scored on the dataset's held-out
  photos and on every photo of the other two datasets; k-nearest neighbours against class-conditional
  Mahalanobis (64 principal components, shrunk covariance, 5-fold calibrated the same way).
- curve: the learning curve of half the pool (3 draws of the half), its projection at the full size against
  the real k-fold accuracy there.
- heatmap: 50 held-out photos per dataset, resized to a longer side of 300 px and pasted at a random place on
  a grey canvas twice that size; a linear head on the pool's features; is the heatmap's peak (the hottest
  cell of the grid) inside the pasted photo? Also the time explain=true adds to a prediction in-process
  (decode, forward, novelty, heatmap and PNG), median of alternating runs.
- analysis: the whole ``analyze`` on the flowers5 pool (1,000 photos, cached features), with the probe
  selection among three backbones.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, report  # noqa: E402
from insights_data import plain_features  # noqa: E402

from vision_trainer.ml import insights  # noqa: E402
from vision_trainer.ml.backbones import pretrained_backbone, resolve_backbone  # noqa: E402
from vision_trainer.ml.cam import render_heatmap, uploaded_size  # noqa: E402
from vision_trainer.ml.fit import single_threaded  # noqa: E402
from vision_trainer.ml.images import open_image  # noqa: E402
from vision_trainer.ml.learning_curve import learning_curve, nested_shares  # noqa: E402
from vision_trainer.ml.linear_probe import fit_softmax_head, out_of_fold, probe_cv_accuracy  # noqa: E402
from vision_trainer.ml.novelty import Novelty, novelty_reference  # noqa: E402
from vision_trainer.ml.predictor import Predictor  # noqa: E402
from vision_trainer.ml.runtime import RuntimeOptions, build_extractor, resolve_runtime  # noqa: E402

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
LITE0 = BACKBONES[0]


def load(data: Path) -> dict[str, dict[str, Any]]:
    """Per dataset: pool and held-out paths with labels."""
    sets = {}
    cd_train, cd_val = class_folders(data / "cats_dogs" / "train"), class_folders(data / "cats_dogs" / "val")
    eu_train, eu_val = class_folders(data / "eurosat_rgb" / "train"), class_folders(data / "eurosat_rgb" / "val")
    flowers = class_folders(data / "flowers5")
    fl_pool, fl_held = {}, {}
    for name, files in flowers.items():
        files = list(files)
        random.Random(0).shuffle(files)
        fl_pool[name], fl_held[name] = files[:200], files[200:300]
    for name, pool, held in (
        ("cats_dogs", cd_train, cd_val),
        ("flowers5", fl_pool, fl_held),
        ("eurosat", eu_train, eu_val),
    ):
        sets[name] = {
            "classes": list(pool),
            "pool": [p for c in pool.values() for p in c],
            "labels": np.array([i for i, c in enumerate(pool.values()) for _ in c]),
            "held": [p for c in held.values() for p in c],
            "held_labels": np.array([i for i, c in enumerate(held.values()) for _ in c]),
        }
    return sets


def flip(labels: np.ndarray, seed: int, fraction: float = 0.1) -> tuple[np.ndarray, set[int]]:
    rng = random.Random(seed)
    classes = int(labels.max()) + 1
    flipped = sorted(rng.sample(range(len(labels)), round(fraction * len(labels))))
    noisy = labels.copy()
    for i in flipped:
        noisy[i] = rng.choice([c for c in range(classes) if c != labels[i]])
    return noisy, set(flipped)


def fixed_cuts(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The analysis's former list: p(given) <= 0.2 and p(other) >= 0.5, by p(given)."""
    rows = np.arange(len(labels))
    given = probabilities[rows, labels]
    others = probabilities.copy()
    others[rows, labels] = -1
    listed = np.flatnonzero((given <= 0.2) & (others.max(axis=1) >= 0.5))
    return listed[np.argsort(given[listed], kind="stable")]


def suspect_rows(sets: dict[str, Any], features: Any, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for name, data in sets.items():
        classes = len(data["classes"])
        probes = {b: features(b, data["pool"]) for b in BACKBONES}
        for seed in seeds:
            noisy, flipped = flip(data["labels"], seed)
            k = len(flipped)
            best = max(BACKBONES, key=lambda b: (probe_cv_accuracy(probes[b], noisy).mean, -BACKBONES.index(b)))
            for method, backbone in (
                ("fixed cuts (before)", LITE0),
                ("confident learning", LITE0),
                ("confident learning", best),
            ):
                result = out_of_fold(probes[backbone], noisy, classes)
                probabilities = result.probabilities()
                ranking = insights.suspect_ranking(probabilities, noisy)
                if method.startswith("fixed"):
                    listed = fixed_cuts(probabilities, noisy)
                    ranking = listed  # the former ranking only ever listed these
                else:
                    listed = np.array([s.index for s in insights.suspect_labels(probabilities, noisy)])
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "method": method,
                        "backbone": backbone,
                        "cv_accuracy": round(float((result.logits.argmax(1) == noisy).mean()), 3),
                        "flipped": k,
                        "in_top_2x": round(len(set(ranking[: 2 * k].tolist()) & flipped) / k, 3),
                        "precision_top_k": round(len(set(ranking[:k].tolist()) & flipped) / k, 3),
                        "listed": len(listed),
                        "list_precision": round(len(set(listed.tolist()) & flipped) / max(1, len(listed)), 3),
                    }
                )
                print(rows[-1], flush=True)
    return rows


class Mahalanobis:
    """Class-conditional Mahalanobis distance (min over classes) in the leading principal components."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, dims: int = 64, shrinkage: float = 0.2) -> None:
        self.mean = features.mean(axis=0)
        _, _, vt = np.linalg.svd(features - self.mean, full_matrices=False)
        self.basis = vt[:dims].T
        z = (features - self.mean) @ self.basis
        self.means = np.stack([z[labels == c].mean(axis=0) for c in np.unique(labels)])
        residual = z - self.means[np.searchsorted(np.unique(labels), labels)]
        covariance = residual.T @ residual / len(z)
        scale = np.trace(covariance) / len(covariance)
        self.precision = np.linalg.inv((1 - shrinkage) * covariance + shrinkage * scale * np.eye(len(covariance)))

    def scores(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) @ self.basis
        return np.stack([np.einsum("ij,jk,ik->i", z - m, self.precision, z - m) for m in self.means], 1).min(axis=1)


def mahalanobis_threshold(features: np.ndarray, labels: np.ndarray, share: float = 0.05) -> float:
    folds = np.arange(len(labels)) % 5
    np.random.default_rng(0).shuffle(folds)
    held = np.zeros(len(labels))
    for k in range(5):
        held[folds == k] = Mahalanobis(features[folds != k], labels[folds != k]).scores(features[folds == k])
    return float(np.quantile(held, 1 - share))


def novelty_rows(sets: dict[str, Any], features: Any) -> list[dict[str, Any]]:
    rows = []
    for name, data in sets.items():
        train, held = features(LITE0, data["pool"]), features(LITE0, data["held"])
        knn = Novelty.from_stored(novelty_reference(train, data["labels"]))
        maha, maha_threshold = Mahalanobis(train, data["labels"]), mahalanobis_threshold(train, data["labels"])
        for other, other_data in sets.items():
            if other == name:
                continue
            foreign = features(LITE0, other_data["pool"] + other_data["held"])
            rows.append(
                {
                    "model": name,
                    "foreign photos": other,
                    "count": len(foreign),
                    "knn held-out flagged": round(float((knn.scores(held) > knn.threshold).mean()), 3),
                    "knn foreign flagged": round(float((knn.scores(foreign) > knn.threshold).mean()), 3),
                    "mahalanobis held-out flagged": round(float((maha.scores(held) > maha_threshold).mean()), 3),
                    "mahalanobis foreign flagged": round(float((maha.scores(foreign) > maha_threshold).mean()), 3),
                }
            )
            print(rows[-1], flush=True)
    return rows


def curve_rows(sets: dict[str, Any], features: Any, draws: int = 3) -> list[dict[str, Any]]:
    rows = []
    for name, data in sets.items():
        x, y = features(LITE0, data["pool"]), data["labels"]
        classes = len(data["classes"])
        with single_threaded():
            full = out_of_fold(x, y, classes)
            real = float((full.logits.argmax(axis=1) == y).mean())
            for draw in range(draws):
                half = nested_shares(y, [0.5], seed=100 + draw)[0]
                curve = learning_curve(x[half], y[half], classes, seed=draw)
                projected = float(curve.overall_fit(len(y)))
                rows.append(
                    {
                        "dataset": name,
                        "draw": draw,
                        "half": len(half),
                        "half accuracy": curve.overall[-1][1],
                        "projected at full size": round(projected, 4),
                        "real at full size": round(real, 4),
                        "error (points)": round(100 * (projected - real), 1),
                        "flat projection error (points)": round(100 * (curve.overall[-1][1] - real), 1),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def linear_head(features: np.ndarray, labels: np.ndarray, classes: int) -> torch.nn.Linear:
    """The L-BFGS probe as an ``nn.Linear`` on raw features (its standardization folded in)."""
    probe = fit_softmax_head(features, labels, classes)
    head = torch.nn.Linear(features.shape[1], classes)
    head.weight.data = torch.tensor((probe.weight / probe.scale[:, None]).T, dtype=torch.float32)
    head.bias.data = torch.tensor(probe.bias - (probe.mean / probe.scale) @ probe.weight, dtype=torch.float32)
    return head


def pasted(path: Path, rng: random.Random) -> tuple[bytes, tuple[int, int, int, int]]:
    photo = Image.open(path).convert("RGB")
    scale = 300 / max(photo.size)
    photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))))
    side = 2 * max(photo.size)
    canvas = Image.new("RGB", (side, side), (128, 128, 128))
    left, top = rng.randrange(0, side - photo.width + 1), rng.randrange(0, side - photo.height + 1)
    canvas.paste(photo, (left, top))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=90)
    return out.getvalue(), (left, top, left + photo.width, top + photo.height)


def heatmap_rows(sets: dict[str, Any], features: Any, work: Path, trials: int = 50) -> list[dict[str, Any]]:
    spec = resolve_backbone(LITE0)
    backbone = pretrained_backbone(spec)
    runtime = RuntimeOptions(kind=resolve_runtime("auto", "cpu"), device="cpu", cache_dir=work / "onnx")
    rows = []
    for name, data in sets.items():
        head = linear_head(features(LITE0, data["pool"]), data["labels"], len(data["classes"]))
        extractor = build_extractor(backbone, name=spec.name, input_size=spec.input_size, options=runtime)
        predictor = Predictor(extractor, head, class_names=data["classes"], preprocessing=spec.preprocessing())
        predictor.module, predictor.spec, predictor.runtime = backbone, spec, runtime
        predictor.novelty = Novelty.from_stored(novelty_reference(features(LITE0, data["pool"]), data["labels"]))
        rng = random.Random(0)
        inside, plain_ms, explain_ms = 0, [], []
        for path in rng.sample(data["held"], trials):
            data_bytes, (left, top, right, bottom) = pasted(path, rng)
            started = time.perf_counter()
            image = open_image(data_bytes, draft_size=predictor.resize_size)
            x, _ = predictor.features_and_probabilities([image])
            predictor.novelty.scores(x)
            plain_ms.append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            image = open_image(data_bytes, draft_size=predictor.resize_size)
            x, probabilities, cams = predictor.explain([image])
            predictor.novelty.scores(x)
            label = data["classes"][int(probabilities[0].argmax())]
            heatmap = render_heatmap(
                label, cams[0], image, uploaded=uploaded_size(data_bytes), resize_size=spec.resize_size, input_size=224
            )
            explain_ms.append(1000 * (time.perf_counter() - started))
            grid = np.array(heatmap.grid)
            row, col = np.unravel_index(grid.argmax(), grid.shape)
            box = heatmap.box
            px = box[0] + (col + 0.5) / grid.shape[1] * (box[2] - box[0])
            py = box[1] + (row + 0.5) / grid.shape[0] * (box[3] - box[1])
            inside += left <= px <= right and top <= py <= bottom
        rows.append(
            {
                "dataset": name,
                "trials": trials,
                "peak inside the pasted photo": round(inside / trials, 3),
                "predict ms (median)": round(statistics.median(plain_ms), 1),
                "predict + explain ms (median)": round(statistics.median(explain_ms), 1),
                "explain adds ms": round(statistics.median(explain_ms) - statistics.median(plain_ms), 1),
            }
        )
        print(rows[-1], flush=True)
    return rows


def analysis_row(sets: dict[str, Any], features: Any, repeats: int = 3) -> dict[str, Any]:
    data = sets["flowers5"]
    noisy, _ = flip(data["labels"], 0)
    probes = {b: features(b, data["pool"]) for b in BACKBONES}
    seconds = []
    insights.suspect_labels(np.full((2, 2), 0.5), np.array([0, 1]))  # cleanlab's import, once per process
    for _ in range(repeats):
        started = time.perf_counter()
        with single_threaded():  # as run_analysis: each candidate's out-of-fold heads, the winner's reused
            results = {b: out_of_fold(probes[b], noisy, 5) for b in BACKBONES}
            scores = {b: float(np.mean(r.fold_accuracies(noisy))) for b, r in results.items()}
            best = max(BACKBONES, key=lambda b: scores[b])
            found = insights.analyze(
                probes[LITE0], noisy, 5, probe_features=probes[best], probe_out_of_fold=results[best]
            )
        seconds.append(time.perf_counter() - started)
    return {
        "photos": len(noisy),
        "seconds (median)": round(statistics.median(seconds), 2),
        "runs": [round(s, 2) for s in seconds],
        "suspects": len(found.suspects),
        "probe": best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATASETS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vt-trust-bench"), help="cached features")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parts", nargs="+", default=["suspects", "novelty", "curve", "heatmap", "analysis"])
    args = parser.parse_args()
    sets = load(args.data)

    def features(backbone: str, paths: list[Path]) -> np.ndarray:
        return plain_features(backbone, paths, args.work)[0]

    for part in args.parts:
        if part == "suspects":
            report("suspect labels, 10 % flipped", suspect_rows(sets, features, args.seeds))
        elif part == "novelty":
            report("novelty at the calibrated threshold (5 %)", novelty_rows(sets, features))
        elif part == "curve":
            report("learning curve: projection from half the photos", curve_rows(sets, features))
        elif part == "heatmap":
            report("heatmaps on pasted photos", heatmap_rows(sets, features, args.work))
        elif part == "analysis":
            report("analysis of 1,000 cached photos", [analysis_row(sets, features)])


if __name__ == "__main__":
    main()

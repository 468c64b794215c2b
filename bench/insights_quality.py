"""How good are the dataset insights? Real photos, planted problems, measured lists.

    .venv/bin/python bench/insights_quality.py                  # 3 planting seeds, lite0/lite1/lite2
    .venv/bin/python bench/insights_quality.py --seeds 0 --backbones efficientnet_lite0

On cats_dogs/train (400 photos) and flowers5 (200 per class = 1,000 photos) the plain-view features
are extracted once per backbone with the training code (kept under --work), then problems are
planted: 10 % of the labels flipped at random, 6 copies resized to 90 % and re-saved as JPEG q72 filed
under another class and 3 under their own, and 9 foreign images (6 photos of the other dataset, a
chart, a screenshot, noise) under random labels. Reported: suspect-label recall in the top
2x(flipped) and precision of the listed suspects; near-duplicate groups found and false ones, from
features alone and with pixel fingerprints; outliers found and the list's length (also on the clean
photos alone); the time of the whole analysis on ~1,000 photos; k-fold accuracy per backbone vs
held-out accuracy (cats_dogs/val, 100 flowers per class never in the pool), i.e. whether
``backbone=auto`` picks well; calibration on those unseen photos with the temperature fitted on
out-of-fold logits of all training photos vs on a 15 % fold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, machine  # noqa: E402
from insights_data import Planted, features_of, load_datasets  # noqa: E402

from vision_trainer.ml import insights  # noqa: E402
from vision_trainer.ml.images import open_image  # noqa: E402
from vision_trainer.ml.linear_probe import fit_softmax_head, out_of_fold, stratified_folds  # noqa: E402
from vision_trainer.ml.metrics import expected_calibration_error, fit_temperature, softmax  # noqa: E402

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# Pairs of the source datasets that are the same photo twice (looked at by eye), not planted.
KNOWN_DUPLICATES = {
    frozenset({"10994032453_ac7f8d9e2e.jpg", "10466290366_cc72e33532.jpg"}),  # flowers5: daisy, twice
    frozenset({"14741907467_fab96f3b2b_n.jpg", "14741813110_94964c39e2_n.jpg"}),  # flowers5: one sunflower
}
AUTO_TIE = 0.005


def suspects_row(data: Planted, pool: np.ndarray, result: insights.Insights, ranked: list[int]) -> dict[str, Any]:
    """Recall of flipped labels in the top 2x(flipped) of the full ranking, the listed suspects' precision,
    and how many photos are listed when nothing is planted (the clean photos with their true labels)."""
    flipped = set(data.flipped)
    planted = flipped | {c for _, c in data.cross_class_copies} | set(data.foreign)
    top = set(ranked[: 2 * len(flipped)])
    listed = [s.index for s in result.suspects]
    top20 = listed[:20]
    clean = data.clean
    on_clean = insights.analyze(pool[clean], data.true_labels[clean], len(data.class_names)).suspects
    return {
        "flipped": len(flipped),
        "recall_top_2x": round(len(top & flipped) / len(flipped), 3),
        "listed": len(listed),
        "precision": round(len(set(listed) & planted) / max(1, len(listed)), 3),
        "precision_top20": round(len(set(top20) & planted) / max(1, len(top20)), 3),
        "listed_recall": round(len(set(listed) & flipped) / len(flipped), 3),
        "clean_listed": len(on_clean),
    }


def duplicates_row(data: Planted, groups: list[insights.DuplicateGroup]) -> dict[str, Any]:
    """Planted copies found, natural duplicates found, and groups that are neither."""
    planted = [frozenset(pair) for pair in data.copies]
    cross = [frozenset(pair) for pair in data.cross_class_copies]
    found = [frozenset(g.members) for g in groups]
    names = [frozenset(data.paths[i].name for i in g) for g in found]
    natural = sum(any(k <= n for k in KNOWN_DUPLICATES) for n in names)
    false = [
        sorted(n)
        for g, n in zip(found, names)
        if not any(p <= g for p in planted) and not any(k <= n for k in KNOWN_DUPLICATES)
    ]
    return {
        "cross_class_found": f"{sum(any(p <= g for g in found) for p in cross)}/{len(cross)}",
        "same_class_found": f"{sum(any(p <= g for g in found) for p in planted if p not in cross)}/"
        f"{len(planted) - len(cross)}",
        "known_duplicates_found": natural,
        "false_groups": len(false),
        "false_group_files": false,
        "weakest_planted": round(
            min((g.similarity for g, f in zip(groups, found) if any(p <= f for p in planted)), default=float("nan")), 3
        ),
    }


def outliers_row(data: Planted, pool: np.ndarray, found: list[insights.Outlier]) -> dict[str, Any]:
    """Foreign images among the outliers, the list's length, and its length on the clean photos alone."""
    clean = data.clean
    on_clean = insights.outliers(insights.outlier_scores(pool[clean], data.true_labels[clean]))
    listed = [o.index for o in found]
    return {
        "foreign_found": f"{len(set(listed) & set(data.foreign))}/{len(data.foreign)}",
        "listed": len(listed),
        "listed_pct": round(100 * len(listed) / len(pool), 1),
        "clean_listed_pct": round(100 * len(on_clean) / len(clean), 1),
    }


def fingerprints_of(paths: list[Path], memo: dict[Path, np.ndarray]) -> np.ndarray:
    for path in paths:
        if path not in memo:
            memo[path] = insights.image_fingerprint(open_image(path))
    return np.stack([memo[p] for p in paths])


def quality(sets: list[Planted], backbone: str, work: Path, memo: dict[Path, np.ndarray]) -> list[dict[str, Any]]:
    """One row per dataset: suspects, duplicates (features only / with fingerprints), outliers."""
    rows = []
    for data in sets:
        pool, _, _ = features_of(data, backbone, work / "features")
        prints = fingerprints_of(data.paths, memo)
        result = insights.analyze(pool, data.labels, len(data.class_names), fingerprints=prints)
        oof = out_of_fold(pool, data.labels, len(data.class_names))
        ranked = [int(i) for i in insights.suspect_ranking(oof.probabilities(), data.labels)]
        features_only = insights.near_duplicate_groups(pool)
        rows.append(
            {
                "dataset": data.name,
                "backbone": backbone,
                "photos": len(pool),
                **{f"suspects_{k}": v for k, v in suspects_row(data, pool, result, ranked).items()},
                **{f"dups_features_{k}": v for k, v in duplicates_row(data, features_only).items()},
                **{f"dups_confirmed_{k}": v for k, v in duplicates_row(data, result.duplicates).items()},
                **{f"outliers_{k}": v for k, v in outliers_row(data, pool, result.outliers).items()},
            }
        )
    return rows


def timing(data: Planted, backbone: str, work: Path, memo: dict[Path, np.ndarray]) -> dict[str, Any]:
    """Seconds of ``analyze`` on the flowers pool (~1,000 photos): first call, then the median and worst of 5,
    with torch's default thread count and with one thread."""
    pool, _, _ = features_of(data, backbone, work / "features")
    prints = fingerprints_of(data.paths, memo)
    row: dict[str, Any] = {"photos": len(pool)}
    default_threads = torch.get_num_threads()
    for threads in (default_threads, 1):
        torch.set_num_threads(threads)
        runs = []
        for _ in range(6):
            start = time.perf_counter()
            insights.analyze(pool, data.labels, len(data.class_names), fingerprints=prints)
            runs.append(time.perf_counter() - start)
        row[f"threads_{threads}"] = {
            "first_s": round(runs[0], 2),
            "median_s": round(statistics.median(runs[1:]), 2),
            "worst_s": round(max(runs[1:]), 2),
        }
    torch.set_num_threads(default_threads)
    return row


def heldout_accuracy(pool: np.ndarray, labels: np.ndarray, held: np.ndarray, held_labels: np.ndarray) -> float:
    head = fit_softmax_head(pool, labels, int(labels.max()) + 1)
    return float((head.logits(held).argmax(1) == held_labels).mean())


def backbones_table(sets: list[Planted], backbones: list[str], work: Path) -> list[dict[str, Any]]:
    """Per dataset and backbone: k-fold accuracy on the clean pool vs accuracy on the unseen hold-out, and auto's pick."""
    rows = []
    for data in sets:
        clean = data.clean
        labels = data.true_labels[clean]
        entries = []
        for backbone in backbones:
            pool, held, _ = features_of(data, backbone, work / "features")
            cv = insights.probe_cv_accuracy(pool[clean], labels)
            entries.append(
                {
                    "dataset": data.name,
                    "backbone": backbone,
                    "cv_accuracy": cv.mean,
                    "cv_std": cv.std,
                    "heldout_accuracy": round(heldout_accuracy(pool[clean], labels, held, data.holdout_labels), 4),
                    "heldout_photos": len(held),
                }
            )
        best_cv = max(e["cv_accuracy"] for e in entries)
        pick = next(e for e in entries if e["cv_accuracy"] >= best_cv - AUTO_TIE)  # cheapest first
        best_held = max(e["heldout_accuracy"] for e in entries)
        for e in entries:
            e["auto_pick"] = e is pick
            e["auto_within_1pt_of_best"] = (
                round(pick["heldout_accuracy"] - best_held, 4) >= -0.01 if e is pick else None
            )
        rows.extend(entries)
    return rows


def calibration_row(data: Planted, backbone: str, work: Path) -> list[dict[str, Any]]:
    """Unseen photos, linear probe: no temperature, T from out-of-fold logits of all training photos,
    T from a 15 % fold (the head then trains on the other 85 %, as training did before)."""
    pool, held, _ = features_of(data, backbone, work / "features")
    clean = data.clean
    x, y = pool[clean], data.true_labels[clean]
    classes = len(data.class_names)
    full = fit_softmax_head(x, y, classes)
    oof = out_of_fold(x, y, classes)
    fold = stratified_folds(y, 7, seed=0) == 0  # one seventh, about 15 %
    partial = fit_softmax_head(x[~fold], y[~fold], classes)
    variants = [
        ("none (T=1)", full.logits(held), 1.0),
        ("out-of-fold, all training photos", full.logits(held), oof.temperature),
        ("15 % fold", partial.logits(held), fit_temperature(partial.logits(x[fold]), y[fold].tolist())),
    ]
    rows = []
    for name, logits, temperature in variants:
        probs = softmax(logits / temperature)
        accuracy = float((probs.argmax(1) == data.holdout_labels).mean())
        confidence = float(probs.max(1).mean())
        rows.append(
            {
                "dataset": data.name,
                "backbone": backbone,
                "temperature_from": name,
                "temperature": round(temperature, 3),
                "unseen_photos": len(held),
                "accuracy": round(accuracy, 4),
                "mean_confidence": round(confidence, 4),
                "abs_gap": round(abs(confidence - accuracy), 4),
                "ece": round(expected_calibration_error(probs, data.holdout_labels.tolist()), 4),
            }
        )
    return rows


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and backbone over the seeds: the mean of numbers, the worst of 'x/y' counts."""
    merged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        merged.setdefault((row["dataset"], row["backbone"]), []).append(row)
    out = []
    for (dataset, backbone), group in merged.items():
        summary: dict[str, Any] = {"dataset": dataset, "backbone": backbone, "seeds": len(group)}
        for key in group[0]:
            values = [r[key] for r in group]
            if key in ("dataset", "backbone") or isinstance(values[0], list):
                continue
            if isinstance(values[0], str):
                summary[key] = min(values, key=lambda v: int(v.split("/")[0]))  # the worst seed
            elif isinstance(values[0], (int, float)):
                summary[key] = values[0] if len(set(values)) == 1 else round(float(np.mean(values)), 3)
        out.append(summary)
    return out


def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = [f"#### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATASETS)
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/vt-insights-bench"), help="planted images and cached features"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    args = parser.parse_args()

    memo: dict[Path, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        sets = load_datasets(args.data, args.work / "planted", seed=seed)
        for backbone in args.backbones:
            rows += [{"seed": seed, **r} for r in quality(sets, backbone, args.work, memo)]
    sets = load_datasets(args.data, args.work / "planted", seed=args.seeds[0])
    speed = timing(sets[1], args.backbones[0], args.work, memo)
    choice = backbones_table(sets, args.backbones, args.work)
    calibration = [r for data in sets for b in args.backbones for r in calibration_row(data, b, args.work)]
    summary = aggregate([{k: v for k, v in r.items() if k != "seed"} for r in rows])
    print(
        json.dumps(
            {
                "benchmark": "insights quality",
                "machine": machine(),
                "per_seed": rows,
                "summary": summary,
                "analysis_seconds": speed,
                "backbones": choice,
                "calibration": calibration,
            },
            indent=2,
        )
    )
    print(markdown(summary, speed, choice, calibration, args))


def markdown(
    summary: list[dict[str, Any]],
    speed: dict[str, Any],
    choice: list[dict[str, Any]],
    calibration: list[dict[str, Any]],
    args: argparse.Namespace,
) -> str:
    info = machine()
    title = (
        f"### Insights quality ({len(args.seeds)} planting seeds; numbers are means over seeds, "
        f"'x/y' counts the worst seed)"
    )
    parts = [title, "", f"Machine: {info['cores']} cores, {info['cpu']}, torch {info['torch']}", ""]
    parts.append(
        table(
            "Suspect labels (10 % flipped)",
            summary,
            [
                "dataset",
                "backbone",
                "photos",
                "suspects_flipped",
                "suspects_recall_top_2x",
                "suspects_listed",
                "suspects_precision",
                "suspects_precision_top20",
                "suspects_listed_recall",
                "suspects_clean_listed",
            ],
        )
    )
    parts.append(
        table(
            "Near-duplicates (resized 90 %, JPEG q72)",
            summary,
            [
                "dataset",
                "backbone",
                "dups_features_cross_class_found",
                "dups_features_same_class_found",
                "dups_features_false_groups",
                "dups_confirmed_cross_class_found",
                "dups_confirmed_same_class_found",
                "dups_confirmed_false_groups",
                "dups_confirmed_known_duplicates_found",
                "dups_confirmed_weakest_planted",
            ],
        )
    )
    parts.append(
        table(
            "Outliers (9 foreign images planted)",
            summary,
            [
                "dataset",
                "backbone",
                "outliers_foreign_found",
                "outliers_listed",
                "outliers_listed_pct",
                "outliers_clean_listed_pct",
            ],
        )
    )
    speed_rows = [
        {"threads": k.split("_")[1], "photos": speed["photos"], **v} for k, v in speed.items() if k != "photos"
    ]
    parts.append(
        table(
            "Whole analysis (analyze, with fingerprints) on the flowers pool",
            speed_rows,
            ["threads", "photos", "first_s", "median_s", "worst_s"],
        )
    )
    parts.append(
        table(
            "Backbones: k-fold accuracy on the pool vs accuracy on unseen photos",
            choice,
            [
                "dataset",
                "backbone",
                "cv_accuracy",
                "cv_std",
                "heldout_accuracy",
                "heldout_photos",
                "auto_pick",
                "auto_within_1pt_of_best",
            ],
        )
    )
    parts.append(
        table(
            "Calibration on unseen photos (linear probe on all clean pool photos)",
            calibration,
            ["dataset", "backbone", "temperature_from", "temperature", "accuracy", "mean_confidence", "abs_gap", "ece"],
        )
    )
    return "\n".join(parts)


if __name__ == "__main__":
    main()

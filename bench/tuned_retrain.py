"""A tuned dataset's first training and its retrain after adding 5 % more photos, with the activation
cache's size on disk and the training process's peak memory, side by side with the head alone.

    .venv/bin/python bench/tuned_retrain.py      # eurosat_rgb/train: 100 photos of each of 10 classes, +5 each

Each ``tune`` runs in a fresh process of its own: a warm-up job (so that no row pays for exporting the
backbone to ONNX), then the first training of the photos (POST /train's path: a dataset made of the
upload, trained), then 5 % more photos (from ``val/``) added to that dataset and a retrain
(POST /datasets/{id}/train). Reported: seconds from request to saved model, activations or features
computed and reused, the test accuracy (see bench/accuracy.py for held-out photos), the cache's bytes on
disk after the first training (for tune=top the activation cache: nothing else goes through it), the
model's head.pth, and the process's peak RSS during each step (Linux's VmHWM, reset after the warm-up,
whose ONNX export of the backbone is a one-off of the first job on a machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, report, train_in_process  # noqa: E402
from retrain import retrain, settings, tree_bytes  # noqa: E402

from vision_trainer.services import training  # noqa: E402
from vision_trainer.services.context import Services  # noqa: E402


def peak_rss_mib() -> float:
    """The process's peak RSS since the last ``reset_peak_rss`` (Linux's VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start the peak over from the current RSS, so that the warm-up's ONNX export is not counted."""
    Path("/proc/self/clear_refs").write_text("5")


def child(payload: dict[str, Any]) -> dict[str, Any]:
    """One ``tune``: warm-up, first training, retrain; the figures as a dict."""
    work, views = Path(payload["work"]), payload["views"]
    classes = {k: [Path(p) for p in v] for k, v in payload["classes"].items()}
    extra = {k: [Path(p) for p in v] for k, v in payload["extra"].items()}
    warmup = {k: v[:3] for k, v in extra.items()}
    cache = work / "cache"
    warm = Services.create(settings(work / "warmup", cache, views))
    train_in_process(warm, warmup, training.TrainRequest(epochs=1, backbone=payload["backbone"], augment_views=0))
    warm.close()
    reset_peak_rss()
    options = training.TrainRequest(backbone=payload["backbone"], tune=payload["tune"])
    data_dir = work / "data"
    services = Services.create(settings(data_dir, cache, views))
    seconds, job = train_in_process(services, classes, options)
    rss_first = peak_rss_mib()
    reset_peak_rss()
    features_bytes = tree_bytes(data_dir / "features")
    head_bytes = (data_dir / "models" / job["model_id"] / "head.pth").stat().st_size
    again = retrain(services, job["dataset_id"], extra, options)
    services.close()
    first, second = job["metrics"], again["job"]["metrics"]
    return {
        "first": {"seconds": seconds, "metrics": first},
        "retrain": {"seconds": again["seconds"], "metrics": second},
        "cache_mib": features_bytes / 2**20,
        "head_mib": head_bytes / 2**20,
        "rss_first_mib": rss_first,
        "rss_retrain_mib": peak_rss_mib(),
    }


def computed(metrics: dict[str, Any]) -> tuple[int, int]:
    tuning = metrics.get("tuning") or {}
    if "activations_computed" in tuning and tuning.get("kept") == "top":
        return tuning["activations_computed"], tuning["activations_reused"]
    return metrics["features_extracted"], metrics["features_reused"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATASETS / "eurosat_rgb" / "train")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--added-share", type=float, default=0.05)
    parser.add_argument("--views", type=int, default=1, help="augmented views (the default VT_AUGMENT_VIEWS)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--tunes", nargs="+", default=["head", "top", "auto"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the run's details on stdin
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return
    folders = class_folders(args.data)
    base = {k: v[: args.per_class] for k, v in folders.items()}
    added = max(1, round(args.per_class * args.added_share))
    val = class_folders(args.data.parent / "val") if (args.data.parent / "val").is_dir() else folders
    extra = {k: [p for p in val[k] if p not in base[k]][:added] for k in folders}
    rows = []
    for tune in args.tunes:
        with tempfile.TemporaryDirectory(prefix="vt-tuned-retrain-") as work:
            payload = {
                "work": work,
                "views": args.views,
                "backbone": args.backbone,
                "tune": tune,
                "classes": {k: [str(p) for p in v] for k, v in base.items()},
                "extra": {k: [str(p) for p in v] for k, v in extra.items()},
            }
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child"],
                input=json.dumps(payload),
                capture_output=True,
                text=True,
                check=True,
            )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        for step in ("first", "retrain"):
            metrics = result[step]["metrics"]
            done, reused = computed(metrics)
            rows.append(
                {
                    "tune": tune,
                    "run": "first training" if step == "first" else f"retrain +{sum(map(len, extra.values()))}",
                    "kept": (metrics.get("tuning") or {}).get("kept", "head"),
                    "seconds": round(result[step]["seconds"], 2),
                    "computed": done,
                    "reused": reused,
                    "test_accuracy": metrics["test_accuracy"],
                    "cache_mib": round(result["cache_mib"], 1) if step == "first" else None,
                    "head_mib": round(result["head_mib"], 2) if step == "first" else None,
                    "peak_rss_mib": round(result[f"rss_{step}_mib"]),
                    "retrain_share": round(result["retrain"]["seconds"] / result["first"]["seconds"], 3)
                    if step == "retrain"
                    else None,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    report(
        f"First training and a retrain after adding {args.added_share:.0%} more photos, by tune "
        f"({args.backbone}, {sum(map(len, base.values()))} photos of {args.data.parent.name}, "
        f"{args.views} augmented view(s))",
        rows,
    )


if __name__ == "__main__":
    main()

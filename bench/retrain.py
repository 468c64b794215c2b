"""The improve-and-retrain loop: first training of a dataset, then a retrain after adding photos, side by
side with the v1 service's POST /train on the same photos.

    .venv/bin/python bench/retrain.py            # cats_dogs/train: 200 + 200 photos, then 10 + 10 more

Rows (each from a request to a saved model, on a data dir of its own, after a warm-up job so that no
row pays for exporting the backbone to ONNX):
- "v1 /train": the service as it was before datasets (git revision --baseline, run in a subprocess from
  a temporary worktree), uploading and training the 400 photos;
- "first train": today's POST /train path (a dataset made from the upload, trained);
- "retrain +20": 20 more photos added to that dataset, then POST /datasets/{id}/train.
The first two alternate --repeat times, each in a fresh process of its own (its own warm-up job, a
fresh data dir and feature cache), and the rows give the median, so that a slow moment of the machine
does not land on one side only. Every first training's dataset is then retrained (the median row).
Also reported: features computed and reused, and how much the data dir grew (the retrain's growth
should be the new photos, their features and a head, not a backbone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, REPO, class_folders, report, train_in_process  # noqa: E402

from vision_trainer.jobs.inline import CallerRunsQueue  # noqa: E402
from vision_trainer.services import datasets, jobs, training  # noqa: E402
from vision_trainer.services.context import Services  # noqa: E402
from vision_trainer.services.uploads import Upload  # noqa: E402
from vision_trainer.services.work import runner  # noqa: E402
from vision_trainer.settings import Settings  # noqa: E402

V1_SCRIPT = """
import json, sys, time
from pathlib import Path
from vision_trainer.jobs.inline import CallerRunsQueue
from vision_trainer.services import training
from vision_trainer.services.context import Services
from vision_trainer.services.uploads import Upload
from vision_trainer.settings import Settings
args = json.loads(sys.stdin.read())
def run(data_dir, classes):
    services = Services.create(Settings(_env_file=None, data_dir=data_dir, cache_dir=args["cache"], augment_views=args["views"]))
    files = [[Upload(Path(p).name, open(p, "rb")) for p in paths] for paths in classes.values()]
    start = time.perf_counter()
    job = training.submit_training(services, CallerRunsQueue(), training.TrainingRequest(
        labels=list(classes), files=files, epochs=args["epochs"], backbone=args["backbone"]))
    status = training.run_training_job(services, job["job_id"])
    seconds = time.perf_counter() - start
    job = training.get_job(services, job["job_id"])
    services.close()
    return seconds, status, job
run(args["warmup_dir"], args["warmup"])
seconds, status, job = run(args["data_dir"], args["classes"])
print(json.dumps({"seconds": seconds, "status": status, "test_accuracy": job["metrics"]["test_accuracy"],
                  "images_through_backbone": job["metrics"]["images_through_backbone"]}))
"""


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def settings(data_dir: Path, cache: Path, views: int) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, cache_dir=cache, augment_views=views)  # type: ignore[call-arg]


def first_train(services: Services, classes: dict[str, list[Path]], options: training.TrainRequest) -> dict[str, Any]:
    seconds, job = train_in_process(services, classes, options)
    return {"seconds": seconds, "job": job}


def retrain(
    services: Services, dataset_id: str, extra: dict[str, list[Path]], options: training.TrainRequest
) -> dict[str, Any]:
    groups = [
        datasets.ImageGroup(label, [Upload(p.name, p.open("rb")) for p in paths]) for label, paths in extra.items()
    ]
    start = time.perf_counter()
    added = datasets.add_images(services, dataset_id, datasets.AddImages(groups=groups))
    add_seconds = time.perf_counter() - start
    start = time.perf_counter()
    job = training.submit_dataset_training(services, CallerRunsQueue(), dataset_id, options)
    status = runner.run_job(services, job["job_id"])
    seconds = time.perf_counter() - start
    assert status == "succeeded" and len(added["added"]) == sum(map(len, extra.values()))
    return {"seconds": seconds, "add_seconds": add_seconds, "job": jobs.get_job(services, job["job_id"])}


def child_first_train(payload: dict[str, Any]) -> None:
    """``--child``: one first training of today's service in this fresh process (after a warm-up job)."""
    cache = Path(payload["cache"])
    options = training.TrainRequest(
        epochs=payload["epochs"], backbone=payload["backbone"], augment_views=payload["views"]
    )
    classes = {k: [Path(p) for p in v] for k, v in payload["classes"].items()}
    warmup = {k: [Path(p) for p in v] for k, v in payload["warmup"].items()}
    warm = Services.create(settings(Path(payload["warmup_dir"]), cache, payload["views"]))
    first_train(warm, warmup, training.TrainRequest(epochs=1, backbone=payload["backbone"], augment_views=0))
    warm.close()
    services = Services.create(settings(Path(payload["data_dir"]), cache, payload["views"]))
    result = first_train(services, classes, options)
    services.close()
    print(json.dumps(result))


class Service:
    """One version of the service: ``train`` runs one first training in a fresh subprocess. ``rev`` set:
    that git revision, checked out in a temporary worktree (the v1 baseline); else this tree."""

    def __init__(self, rev: str | None, work: Path, args: argparse.Namespace) -> None:
        self.rev, self.work, self.args, self.runs = rev, work, args, 0
        self.tree = work / "v1-tree" if rev else REPO
        self.available = True
        if rev:
            made = subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(self.tree), rev],
                capture_output=True,
                text=True,
            )
            self.available = made.returncode == 0
            if not self.available:
                print(f"baseline {rev} not available ({made.stderr.strip()}); skipping the v1 row", file=sys.stderr)

    def train(self, classes: dict[str, list[Path]], warmup: dict[str, list[Path]]) -> dict[str, Any]:
        self.runs += 1
        name = "v1" if self.rev else "first"
        payload = {
            "data_dir": str(self.work / f"{name}-data-{self.runs}"),
            "warmup_dir": str(self.work / f"{name}-warmup-{self.runs}"),
            "cache": str(self.work / f"{name}-cache"),
            "classes": {k: [str(p) for p in v] for k, v in classes.items()},
            "warmup": {k: [str(p) for p in v] for k, v in warmup.items()},
            "epochs": self.args.epochs,
            "backbone": self.args.backbone,
            "views": self.args.views,
        }
        command = ["-c", V1_SCRIPT] if self.rev else [str(Path(__file__).resolve()), "--child"]
        out = subprocess.run(
            [sys.executable, *command],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(self.tree / "src")},
            check=True,
        )
        return {**json.loads(out.stdout.strip().splitlines()[-1]), "data_dir": payload["data_dir"]}

    def close(self) -> None:
        if self.rev and self.available:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(self.tree)], capture_output=True
            )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATASETS / "cats_dogs" / "train")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--added-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--views", type=int, default=1, help="augmented views (the default VT_AUGMENT_VIEWS)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--baseline", default="5038673", help="git revision of the v1 service to compare with")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of v1 and the first training")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the run's details on stdin
    args = parser.parse_args()
    if args.child:
        child_first_train(json.loads(sys.stdin.read()))
        return
    folders = class_folders(args.data)
    base = {k: v[: args.per_class] for k, v in folders.items()}
    # The added photos come from the val split when there is one (else from the rest of each class).
    val_folders = class_folders(args.data.parent / "val") if (args.data.parent / "val").is_dir() else folders
    extra = {k: [p for p in val_folders[k] if p not in base[k]][: args.added_per_class] for k in folders}
    warmup = {k: v[-6:] for k, v in val_folders.items()}
    options = training.TrainRequest(epochs=args.epochs, backbone=args.backbone, augment_views=args.views)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        v1_service, today = Service(args.baseline, work, args), Service(None, work, args)
        v1_runs, first_runs = [], []
        try:
            for _ in range(args.repeat):
                if v1_service.available:
                    v1_runs.append(v1_service.train(base, warmup))
                first_runs.append(today.train(base, warmup))
        finally:
            v1_service.close()
        v1 = median_run(v1_runs) if v1_runs else None
        if v1 is not None:
            rows.append(
                {
                    "run": f"v1 /train ({args.baseline})",
                    "photos": sum(map(len, base.values())),
                    "seconds": v1["seconds"],
                    "features_computed": v1["images_through_backbone"],
                    "features_reused": 0,
                    "test_accuracy": v1["test_accuracy"],
                }
            )
        first = median_run(first_runs)
        # Every first training's dataset is retrained (the same photos added to each), in this process after a
        # warm-up job of its own; the row is the median retrain.
        warm = Services.create(settings(work / "warmup", work / "first-cache", args.views))
        first_train(warm, warmup, training.TrainRequest(epochs=1, backbone=args.backbone, augment_views=0))
        warm.close()
        retrains = []
        for run in first_runs:
            data_dir = Path(run["data_dir"])
            services = Services.create(settings(data_dir, work / "first-cache", args.views))
            size_after_first = tree_bytes(data_dir)
            result = retrain(services, run["job"]["dataset_id"], extra, options)
            model_dir = data_dir / "models" / result["job"]["model_id"]
            result.update(
                grown=tree_bytes(data_dir) - size_after_first,
                model_files={p.name: p.stat().st_size for p in model_dir.iterdir()},
            )
            services.close()
            retrains.append(result)
        second = median_run(retrains)
        grown, model_files = second["grown"], second["model_files"]
        new_photos = sum(p.stat().st_size for paths in extra.values() for p in paths)
    for label, result, photos, growth in (
        ("first train (POST /train)", first, sum(map(len, base.values())), None),
        (
            f"retrain +{sum(map(len, extra.values()))}",
            second,
            sum(map(len, base.values())) + sum(map(len, extra.values())),
            grown,
        ),
    ):
        metrics = result["job"]["metrics"]
        rows.append(
            {
                "run": label,
                "photos": photos,
                "seconds": result["seconds"],
                "features_computed": metrics["features_extracted"],
                "features_reused": metrics["features_reused"],
                "test_accuracy": metrics["test_accuracy"],
                "data_dir_growth_kib": None if growth is None else round(growth / 1024),
            }
        )
    extra_info = {
        "speed-up of the retrain over the first train": round(first["seconds"] / second["seconds"], 1),
        "first train vs v1 /train (medians)": None if v1 is None else round(first["seconds"] / v1["seconds"], 3),
        "seconds of every run, v1 /train": [round(run["seconds"], 3) for run in v1_runs],
        "seconds of every run, first train": [round(run["seconds"], 3) for run in first_runs],
        "seconds of every run, retrain": [round(run["seconds"], 3) for run in retrains],
        "retrain: seconds to add the photos": round(second["add_seconds"], 3),
        "retrain: new photos' bytes": new_photos,
        "retrain: the new model's files (bytes)": model_files,
        "retrain: the job's log": second["job"]["log"],
    }
    report("retrain after adding photos", rows, extra_info)


if __name__ == "__main__":
    main()

"""Prediction under load over HTTP: our server vs the seed's naive one, side by side.

    .venv/bin/python bench/predict_load.py            # 1, 8 and 16 clients, 20 s each

Starts `vision-trainer serve` (as `make run` does) on a temporary data dir, trains a cats-vs-dogs
model through the API, starts bench/naive_server.py on the same checkpoint, then drives each with
N concurrent clients posting real photos. Also reports the in-process cost of one decode + one
forward at batch 1, the floor for a single client's p50.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, free_port, percentile, report, start_process  # noqa: E402

from vision_trainer.ml.checkpoint import load_checkpoint  # noqa: E402
from vision_trainer.ml.images import open_image  # noqa: E402
from vision_trainer.ml.predictor import Predictor  # noqa: E402
from vision_trainer.ml.runtime import RuntimeOptions, resolve_runtime  # noqa: E402


async def drive(url: str, photos: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        async with httpx.AsyncClient(timeout=120) as http:
            while time.perf_counter() < deadline:
                body = rng.choice(photos)
                start = time.perf_counter()
                try:
                    response = await http.post(url, files={"file": ("photo.jpg", body, "image/jpeg")})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    return {
        "clients": clients,
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "requests": len(latencies),
        "errors": errors,
    }


def in_process_floor(checkpoint: Path, photos: list[bytes], cache_dir: Path, runs: int = 60) -> float:
    """Median seconds of one decode + one batch-1 forward through the serving Predictor."""
    runtime = RuntimeOptions(resolve_runtime("auto", "cpu"), cache_dir=cache_dir)
    predictor = Predictor.from_checkpoint(load_checkpoint(checkpoint), runtime=runtime)
    timings = []
    for i in range(runs):
        start = time.perf_counter()
        predictor.predict([open_image(photos[i % len(photos)], draft_size=predictor.resize_size)], top_k=2)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings[5:])


def train_model(base: str, train: dict[str, list[Path]], per_class: int) -> str:
    files = [
        (f"files{n}", (p.name, p.read_bytes(), "image/jpeg"))
        for n, paths in enumerate(train.values(), start=1)
        for p in paths[:per_class]
    ]
    data = {f"label{n}": name for n, name in enumerate(train, start=1)}
    data.update(epochs="3", wait="true", backbone="efficientnet_lite0")
    job = httpx.post(f"{base}/train", data=data, files=files, timeout=600).json()
    if job.get("status") != "succeeded":
        sys.exit(f"training failed: {job}")
    return job["model_id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", default="1,8,16")
    parser.add_argument("--per-class", type=int, default=40, help="training photos per class")
    args = parser.parse_args()
    train = class_folders(DATASETS / "cats_dogs" / "train")
    photos = [p.read_bytes() for paths in class_folders(DATASETS / "cats_dogs" / "val").values() for p in paths]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours_port, naive_port = free_port(), free_port()
        ours = start_process(
            [sys.executable, "-m", "vision_trainer.cli", "serve"],
            {"VT_DATA_DIR": str(root / "data"), "VT_PORT": str(ours_port), "VT_LOG_LEVEL": "warning"},
            f"http://127.0.0.1:{ours_port}/health/ready",
            root / "ours.log",
        )
        naive = None
        try:
            base = f"http://127.0.0.1:{ours_port}"
            model_id = train_model(base, train, args.per_class)
            checkpoint = root / "trained_model.pth"
            checkpoint.write_bytes(httpx.get(f"{base}/models/{model_id}/checkpoint").content)
            naive = start_process(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "naive_server:app",
                    "--app-dir",
                    "bench",
                    "--port",
                    str(naive_port),
                    "--log-level",
                    "warning",
                ],
                {"NAIVE_CHECKPOINT": str(checkpoint)},
                f"http://127.0.0.1:{naive_port}/",
                root / "naive.log",
            )
            floor = in_process_floor(checkpoint, photos, root / "cache")
            rows = []
            for name, url in (("naive (seed)", f"http://127.0.0.1:{naive_port}/predict"), ("ours", f"{base}/predict")):
                for clients in [int(c) for c in args.clients.split(",")]:
                    rows.append({"server": name, **asyncio.run(drive(url, photos, clients, args.seconds))})
        finally:
            for process in (ours, naive):
                if process is not None:
                    process.kill()
    speedups = {}
    for row in rows:
        if row["server"] == "ours":
            naive_row = next(r for r in rows if r["server"] != "ours" and r["clients"] == row["clients"])
            speedups[row["clients"]] = round(row["req_per_s"] / max(naive_row["req_per_s"], 1e-9), 1)
    report(
        f"predict_load: {args.seconds:.0f} s per level, real cats_dogs/val photos",
        rows,
        {
            "in-process decode + forward at batch 1 (ms)": round(floor * 1000, 1),
            "ours / naive req/s by clients": speedups,
        },
    )


if __name__ == "__main__":
    main()

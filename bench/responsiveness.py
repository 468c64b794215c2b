"""Is the API responsive while it trains, and does memory stay bounded?

    .venv/bin/python bench/responsiveness.py

Starts `vision-trainer serve` on a temporary data dir, runs a small warm-up job (it exports the
backbone to ONNX, once per machine), then submits a 1000-image job (flowers5, 200 per class) and
measures `GET /` latency (p50/p99) while it trains and the server's peak RSS during it; then runs 5
consecutive jobs and reports the RSS after each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASETS,
    class_folders,
    free_port,
    percentile,
    report,
    rss_mib,
    start_process,
    upload_form,
)


def latency_while_training(client: httpx.Client, job_id: str, pid: int) -> dict[str, Any]:
    latencies, rss_samples = [], []
    while True:
        start = time.perf_counter()
        client.get("/")
        latencies.append(time.perf_counter() - start)
        rss_samples.append(rss_mib(pid))
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return {"job": job, "latencies": latencies, "rss": rss_samples}
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=200, help="flowers5 photos per class (5 classes)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="consecutive jobs for the RSS check")
    args = parser.parse_args()
    flowers = class_folders(DATASETS / "flowers5")

    with tempfile.TemporaryDirectory() as tmp:
        root, port = Path(tmp), free_port()
        server = start_process(
            [sys.executable, "-m", "vision_trainer.cli", "serve"],
            {"VT_DATA_DIR": str(root / "data"), "VT_PORT": str(port), "VT_LOG_LEVEL": "warning"},
            f"http://127.0.0.1:{port}/health/ready",
            root / "server.log",
        )
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
            rss_idle = rss_mib(server.pid)
            # A small first job pays the one-time ONNX export of the backbone (a fresh machine's first
            # job only); the peak of the measured job is then its own.
            data, files = upload_form(flowers, 10, epochs="1", wait="true", backbone="efficientnet_lite0")
            client.post("/train", data=data, files=files)
            rss_warm = rss_mib(server.pid, "VmHWM")
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
            data, files = upload_form(flowers, args.per_class, epochs=str(args.epochs), backbone="efficientnet_lite0")
            start = time.perf_counter()
            job_id = client.post("/train", data=data, files=files).json()["job_id"]
            run = latency_while_training(client, job_id, server.pid)
            seconds = time.perf_counter() - start
            peak = rss_mib(server.pid, "VmHWM")
            rows: list[dict[str, Any]] = [
                {
                    "measure": f"GET / while a {args.per_class * len(flowers)}-image job trains",
                    "p50_ms": percentile(run["latencies"], 50) * 1000,
                    "p99_ms": percentile(run["latencies"], 99) * 1000,
                    "samples": len(run["latencies"]),
                    "job_seconds": seconds,
                    "job_status": run["job"]["status"],
                    "rss_mib": max(run["rss"]),
                }
            ]
            for n in range(1, args.repeat + 1):
                data, files = upload_form(
                    flowers,
                    args.per_class,
                    epochs=str(args.epochs),
                    wait="true",
                    backbone="efficientnet_lite0",
                    seed=str(n),
                )
                job = client.post("/train", data=data, files=files).json()
                rows.append(
                    {
                        "measure": f"after consecutive job {n}",
                        "job_status": job["status"],
                        "rss_mib": rss_mib(server.pid),
                    }
                )
        finally:
            server.kill()
    report(
        "responsiveness: API latency during training and server memory",
        rows,
        {
            "server RSS idle before training (MiB)": round(rss_idle, 1),
            "server peak RSS during the first small job, incl. one-time ONNX export (MiB)": round(rss_warm, 1),
            "server peak RSS during the 1000-image job (MiB)": round(peak, 1),
            "RSS growth from job 1 to job 5 (MiB)": round(rows[-1]["rss_mib"] - rows[1]["rss_mib"], 1),
        },
    )


if __name__ == "__main__":
    main()

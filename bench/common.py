"""Shared helpers of the benchmarks: machine description, JSON + markdown output, datasets, servers."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("VT_TEST_DATASETS", REPO.parent / "shared" / "datasets"))


def machine() -> dict[str, Any]:
    """Cores, CPU model and GPU (if any) of this machine."""
    import torch

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": len(os.sched_getaffinity(0)), "cpu": model, "gpu": gpu, "torch": torch.__version__}


def report(title: str, rows: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
    """Print the results as one JSON document, then as a markdown table."""
    info = machine()
    print(json.dumps({"benchmark": title, "machine": info, "rows": list(rows), **(extra or {})}, indent=2))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print()
    print(f"### {title}")
    print()
    gpu = info["gpu"] or "no GPU"
    print(f"Machine: {info['cores']} cores, {info['cpu']}, {gpu}, torch {info['torch']}")
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    for key, value in (extra or {}).items():
        print(f"\n{key}: {value}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return "" if value is None else str(value)


def class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image paths}`` for every sub-folder of ``root``."""
    if not root.is_dir():
        sys.exit(f"dataset folder {root} not found (set VT_TEST_DATASETS or pass --data)")
    return {d.name: sorted(p for p in d.iterdir() if p.is_file()) for d in sorted(root.iterdir()) if d.is_dir()}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def upload_form(data: dict[str, list[Path]], per_class: int, **fields: str) -> tuple[dict[str, str], list]:
    """A ``POST /train`` form: ``label1..N`` and ``per_class`` photos of each class as ``files1..N``."""
    values = {f"label{n}": name for n, name in enumerate(data, start=1)}
    values.update(fields)
    files = [
        (f"files{n}", (p.name, p.read_bytes(), "image/jpeg"))
        for n, paths in enumerate(data.values(), start=1)
        for p in paths[:per_class]
    ]
    return values, files


def train_in_process(services: Any, classes: dict[str, list[Path]], options: Any) -> tuple[float, dict[str, Any]]:
    """``POST /train``'s path without HTTP: store the photos, run the job to a saved model. The seconds
    from the request to the saved model, and the job; the job must succeed."""
    from vision_trainer.jobs.inline import CallerRunsQueue
    from vision_trainer.services import jobs, training
    from vision_trainer.services.uploads import Upload
    from vision_trainer.services.work import runner

    files = [[Upload(p.name, p.open("rb")) for p in paths] for paths in classes.values()]
    start = time.perf_counter()
    try:
        job = training.submit_training(
            services, CallerRunsQueue(), training.TrainingUpload(labels=list(classes), files=files, options=options)
        )
        status = runner.run_job(services, job["job_id"])
        seconds = time.perf_counter() - start
    finally:
        for group in files:
            for upload in group:
                upload.stream.close()
    finished = jobs.get_job(services, job["job_id"])
    assert status == "succeeded", finished
    return seconds, finished


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(args: list[str], env: dict[str, str], url: str, log: Path) -> subprocess.Popen:
    """Start a server process and wait until ``url`` answers."""
    import httpx

    handle = log.open("ab")
    process = subprocess.Popen(args, cwd=REPO, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited early; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    sys.exit(f"server did not answer at {url}; see {log}")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory (``VmRSS``) or its peak (``VmHWM``) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def held_out_accuracy(predictor: Any, photos: dict[str, list[Path]]) -> float:
    """Top-1 accuracy of a ``Predictor`` on photos neither training nor testing saw (class -> paths),
    through the serving path in batches of 32."""
    from vision_trainer.ml.images import open_image

    hits = total = 0
    for label, paths in photos.items():
        for start in range(0, len(paths), 32):
            images = [open_image(p, draft_size=predictor.resize_size) for p in paths[start : start + 32]]
            hits += sum(ranked[0][0] == label for ranked in predictor.predict(images, top_k=1))
            total += len(images)
    return hits / total

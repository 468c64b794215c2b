"""Does a crowd watching a job slow it down? The same job with 0, 50 and 200 watchers on its events.

    .venv/bin/python bench/watchers.py                     # local backend, then Celery
    .venv/bin/python bench/watchers.py --backends local    # only the local backend

Starts `vision-trainer serve` (a uvicorn process) on a temporary data dir and, for the Celery
backend, a throwaway Redis and PostgreSQL with one `vision-trainer worker`. After a warm-up job (it
exports the backbone to ONNX) it trains the same job (cats_dogs/train, 120 cats + 120 dogs,
10 epochs, 2 augmented views, efficientnet_lite0) once per watcher count, with the feature cache
emptied before each run so that every run extracts the same features. The watchers run in a
separate process: each opens `GET /jobs/{id}/events` right after the job was submitted (so they join
mid-job: replay, then live), reconnects with `Last-Event-ID` if its stream ends early, as the web page
does, and records every event id. Meanwhile this process measures `GET /` latency.

Reported per run: the job's seconds (server timestamps, submit to final status) and its ratio to the
unwatched run, `GET /` p50/p99, how many watchers received exactly the job's events, in order,
ending with the final status (compared with one replay read after the job ended), and the CPU
seconds the API process, the Celery worker and the watchers' process used meanwhile. On a shared
machine the wall times move with everyone else's load; the CPU seconds much less, so the API's CPU
with and without watchers is the steadier measure of what watching costs.

All traffic goes to 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASETS,
    REPO,
    class_folders,
    free_port,
    percentile,
    report,
    start_process,
    upload_form,
)

FINAL = ("succeeded", "failed", "cancelled")
DEADLINE_S = 600  # the longest any one run may take


# --- the watchers (a child process) ----------------------------------------------------------------


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _chunks(reader: asyncio.StreamReader, chunked: bool):
    """The body of a chunked (or close-delimited) HTTP/1.1 response, piece by piece."""
    while True:
        if not chunked:
            data = await reader.read(65536)
            if not data:
                return
            yield data
            continue
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def _stream_once(port: int, job_id: str, last_id: str, seen: list[tuple[int, str]]) -> tuple[str, str | None]:
    """One connection: append ``(id, kind)`` of each event; return (last id, final status or None)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                f"Last-Event-ID: {last_id}\r\n\r\n"
            ).encode()
        )
        status, headers = await _read_head(reader)
        if status != 200:
            await asyncio.sleep(1)
            return last_id, None
        pending, event_id, kind, data = b"", None, None, None
        async for chunk in _chunks(reader, headers.get("transfer-encoding") == "chunked"):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line = raw.rstrip(b"\r").decode()
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif not line and data is not None:
                    seen.append((int(event_id or 0), kind or "message"))
                    last_id = event_id or last_id
                    if kind == "status" and json.loads(data)["status"] in FINAL:
                        return last_id, json.loads(data)["status"]
                    event_id, kind, data = None, None, None
        return last_id, None
    finally:
        writer.close()


async def _watch(port: int, job_id: str) -> dict[str, Any]:
    seen: list[tuple[int, str]] = []
    last_id, final, connects = "0", None, 0
    while final is None and connects < 50:
        connects += 1
        try:
            last_id, final = await _stream_once(port, job_id, last_id, seen)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await asyncio.sleep(0.5)
    return {"ids": [i for i, _ in seen], "final": final, "connects": connects}


async def _watch_all(port: int, count: int, job_id: str) -> dict[str, Any]:
    tasks = [asyncio.ensure_future(_watch(port, job_id)) for _ in range(count)]
    results = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    reference = await _watch(port, job_id)  # one replay after the end: every event the job has
    complete = sum(r["ids"] == reference["ids"] and r["final"] == reference["final"] for r in results)
    return {
        "watchers": count,
        "complete": complete,
        "events": len(reference["ids"]),
        "final": reference["final"],
        "reconnects": sum(r["connects"] - 1 for r in results),
    }


def watcher_process(port: int, count: int) -> None:
    """Child process: read the job id from stdin, watch it ``count`` times, print a JSON summary."""
    job_id = sys.stdin.readline().strip()
    print(json.dumps(asyncio.run(_watch_all(port, count, job_id))), flush=True)


# --- the measuring side ----------------------------------------------------------------------------


def form(per_class: int, **fields: str) -> tuple[dict[str, str], list]:
    return upload_form(class_folders(DATASETS / "cats_dogs" / "train"), per_class, **fields)


def _probe(client: httpx.Client, job_id: str) -> tuple[list[float], dict]:
    """``GET /`` every 50 ms until the job ends; its latencies and the final job."""
    latencies: list[float] = []
    deadline = time.monotonic() + DEADLINE_S
    n = 0
    while time.monotonic() < deadline:
        start = time.perf_counter()
        client.get("/")
        latencies.append(time.perf_counter() - start)
        n += 1
        if n % 5 == 0:
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] in FINAL:
                return latencies, job
        time.sleep(0.05)
    raise SystemExit(f"job {job_id} did not end within {DEADLINE_S} s")


def _seconds(job: dict) -> float:
    created, finished = (datetime.fromisoformat(job[k]) for k in ("created_at", "finished_at"))
    return (finished - created).total_seconds()


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(
    client: httpx.Client, port: int, watchers: int, args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, Any]:
    child = None
    if watchers:
        child = subprocess.Popen(
            [sys.executable, __file__, "--watch", str(port), str(watchers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        pids = {**pids, "watchers": child.pid}
    data, files = form(
        args.per_class, epochs=str(args.epochs), augment_views=str(args.views), backbone="efficientnet_lite0"
    )
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    response = client.post("/train", data=data, files=files)
    response.raise_for_status()
    job_id = response.json()["job_id"]
    summary: dict[str, Any] = {"complete": 0, "events": None, "reconnects": 0}
    if child:
        assert child.stdin is not None
        child.stdin.write(job_id + "\n")
        child.stdin.flush()
    latencies, job = _probe(client, job_id)
    cpu = {f"{name}_cpu_s": cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
    if child:
        out, _ = child.communicate(timeout=DEADLINE_S)
        summary = json.loads(out.strip().splitlines()[-1])
    return {
        "watchers": watchers,
        "job_s": _seconds(job),
        "status": job["status"],
        "get_p50_ms": percentile(latencies, 50) * 1000,
        "get_p99_ms": percentile(latencies, 99) * 1000,
        "probes": len(latencies),
        "watchers_complete": f"{summary['complete']}/{watchers}",
        "events": summary["events"],
        "reconnects": summary["reconnects"],
        **cpu,
    }


def _wait_worker(log: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while " ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start; see {log}")
        time.sleep(0.2)


def run_backend(backend: str, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    root.mkdir(parents=True)
    env = {"VT_DATA_DIR": str(root / "data"), "VT_LOG_LEVEL": "warning"}
    extra: list[subprocess.Popen] = []
    servers: list[Any] = []
    if backend == "celery":
        sys.path.insert(0, str(REPO))
        from tests.servers import PostgresServer, RedisServer

        redis, postgres = RedisServer(), PostgresServer()
        servers += [redis, postgres]
        env.update(VT_JOB_BACKEND="celery", VT_BROKER_URL=redis.url, VT_DATABASE_URL=postgres.create_database())
    port = free_port()
    try:
        server = start_process(
            [sys.executable, "-m", "vision_trainer.cli", "serve"],
            {**env, "VT_PORT": str(port)},
            f"http://127.0.0.1:{port}/health/ready",
            root / f"{backend}-server.log",
        )
        extra.append(server)
        pids = {"api": server.pid}
        if backend == "celery":
            log = root / "worker.log"
            worker = subprocess.Popen(
                [sys.executable, "-m", "vision_trainer.cli", "worker", "--concurrency", "1"],
                cwd=REPO,
                env={**os.environ, **env, "VT_LOG_LEVEL": "info"},
                stdout=log.open("ab"),
                stderr=subprocess.STDOUT,
            )
            extra.append(worker)
            pids["worker"] = worker.pid
            _wait_worker(log, worker)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=DEADLINE_S)
        data, files = form(10, epochs="1", wait="true", backbone="efficientnet_lite0")
        warm = client.post("/train", data=data, files=files).json()  # one-time ONNX export
        if warm["status"] != "succeeded":
            raise SystemExit(f"warm-up job failed: {warm}")
        rows = []
        for _ in range(args.rounds):
            for watchers in args.watchers:
                # Every run extracts all its features: the feature cache would make repeats nearly free.
                shutil.rmtree(root / "data" / "features", ignore_errors=True)
                row = {"backend": backend, **run_once(client, port, watchers, args, pids)}
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
        return rows
    finally:
        for process in reversed(extra):
            process.kill()
            process.wait(30)
        for server in servers:
            server.stop()


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With several rounds, the fastest run per (backend, watchers), since other work on a shared machine
    only ever adds time; the ratio to the fastest unwatched run; every run's seconds alongside."""
    out = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend]
        groups = {
            w: sorted((r for r in mine if r["watchers"] == w), key=lambda r: r["job_s"])
            for w in dict.fromkeys(r["watchers"] for r in mine)
        }
        fastest = {w: g[0] for w, g in groups.items()}
        base = fastest.get(0, {}).get("job_s")
        for w, row in fastest.items():
            row = {
                **row,
                "vs_unwatched": row["job_s"] / base if base else None,
                "job_s_runs": ", ".join(f"{r['job_s']:.1f}" for r in groups[w]),
            }
            out.append({key: row[key] for key in COLUMNS if key in row})
    return out


COLUMNS = (
    "backend",
    "watchers",
    "job_s",
    "vs_unwatched",
    "job_s_runs",
    "get_p50_ms",
    "get_p99_ms",
    "api_cpu_s",
    "worker_cpu_s",
    "watchers_cpu_s",
    "watchers_complete",
    "events",
    "reconnects",
    "status",
    "probes",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["local", "celery"], choices=["local", "celery"])
    parser.add_argument("--watchers", nargs="+", type=int, default=[0, 50, 200])
    parser.add_argument("--per-class", type=int, default=120, help="cats_dogs/train photos per class")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--views", type=int, default=2, help="augmented views per training image")
    parser.add_argument("--rounds", type=int, default=3, help="repeat every run; the table shows the fastest")
    parser.add_argument("--label", default="", help="a note for the table (e.g. the commit measured)")
    parser.add_argument("--summarize", type=Path, help="only print the table of the JSON rows in this file")
    parser.add_argument("--watch", nargs=2, type=int, metavar=("PORT", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        watcher_process(*args.watch)
        return
    title = "watchers: one job, 0/50/200 clients on its events" + (f" ({args.label})" if args.label else "")
    if args.summarize:
        rows = [json.loads(line) for line in args.summarize.read_text().splitlines() if line.startswith("{")]
        report(title, summarize(rows))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            rows += run_backend(backend, args, Path(tmp) / backend)
    job = f"{2 * args.per_class} photos, {args.epochs} epochs, {args.views} augmented views, efficientnet_lite0"
    report(title, summarize(rows), {"job": job, "rounds": args.rounds})


if __name__ == "__main__":
    main()

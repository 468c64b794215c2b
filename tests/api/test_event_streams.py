"""Live job events for a crowd: one shared subscription per job, replay then live, bounded streams.

The app runs in a real uvicorn server (a thread of the test process) so that many streams are open
at once over real sockets. Jobs are either tiny real trainings or rows and events written here through
the app's own database, as the training code writes them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from vision_trainer.api import streams
from vision_trainer.api.app import create_app
from vision_trainer.services.events import JobEventHub
from vision_trainer.settings import Settings
from vision_trainer.store import repository as repo

from ..conftest import FINAL, multipart, wait_for_job
from ..servers import free_port, http_client

RED, BLUE = (220, 30, 30), (30, 30, 220)
Event = tuple[int, str, dict[str, Any]]


@dataclass
class LiveServer:
    app: FastAPI
    url: str
    client: httpx.Client

    @property
    def hub(self) -> JobEventHub:
        return self.app.state.live.events

    def write_events(self, job_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Commit events of ``job_id`` through the app's database, one transaction, as a job runner does."""
        with self.app.state.services.db.session() as session:
            for kind, data in events:
                repo.add_event(session, job_id=job_id, kind=kind, data=data)

    def fake_job(self) -> str:
        """A running job row that this test drives by writing its events."""
        job_id = uuid.uuid4().hex
        with self.app.state.services.db.session() as session:
            repo.create_job(session, job_id=job_id, params={}, class_names=["a", "b"], inputs=[])
            repo.update_job(session, job_id=job_id, status="running")
        return job_id

    def finish(self, job_id: str) -> None:
        self.write_events(job_id, [("status", {"status": "succeeded", "model_id": None, "error": None})])

    def metric(self, name: str) -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")


def run_server(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    app = create_app(settings)
    server, thread, url = run_server(app)
    with http_client(url, timeout=120) as client:
        yield LiveServer(app, url, client)
    server.should_exit = True
    thread.join(30)


def read_events(
    url: str, job_id: str, *, last_id: int = 0, on_event: Callable[[Event], None] | None = None, timeout: float = 300
) -> list[Event]:
    """One client: the events of a job until its final status, reconnecting with ``Last-Event-ID`` when
    the server ends the stream early (as the web page does)."""
    events: list[Event] = []
    # verify=False: plain http, and loading the CA bundle costs 60 ms of CPU per client, which would
    # bunch up clients meant to arrive spread out.
    with httpx.Client(base_url=url, timeout=timeout, verify=False) as client:
        for _ in range(20):
            headers = {"Last-Event-ID": str(last_id)} if last_id else {}
            with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
                assert response.status_code == 200, response.read()
                event_id, kind = 0, ""
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        event_id = int(line[3:])
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        events.append((event_id, kind, json.loads(line[5:])))
                        last_id = event_id
                        if on_event:
                            on_event(events[-1])
                        if kind == "status" and events[-1][2]["status"] in FINAL:
                            return events
    raise AssertionError(f"no final status after 20 connections: {events[-3:]}")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def count_reads(hub: JobEventHub) -> dict[str, int]:
    """Count the hub's database reads by kind (function name)."""
    counts: dict[str, int] = {}
    original = hub.read

    async def counted(fn: Callable[..., Any], *args: Any) -> Any:
        counts[fn.__name__] = counts.get(fn.__name__, 0) + 1
        return await original(fn, *args)

    hub.read = counted  # type: ignore[method-assign]
    return counts


# --- a crowd on one real job ------------------------------------------------------------------------


def test_many_streams_on_one_job_receive_the_same_ordered_events_and_the_final_status(
    live_server: LiveServer, colour_images
) -> None:
    reads = count_reads(live_server.hub)
    data, files = multipart({"red": colour_images(RED, 6), "blue": colour_images(BLUE, 6)}, epochs=3)
    job_id = live_server.client.post("/train", data=data, files=files).json()["job_id"]
    streams = 30
    with ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda _: read_events(live_server.url, job_id), range(streams)))
    reference = read_events(live_server.url, job_id)  # a replay after the end: every event the job has

    assert reference[-1][1] == "status" and reference[-1][2]["status"] == "succeeded"
    ids = [event_id for event_id, _, _ in reference]
    assert ids == sorted(set(ids))
    assert all(result == reference for result in results)
    job = wait_for_job(live_server.client, job_id)
    assert [d["line"] for _, kind, d in reference if kind == "log"] == job["log"]
    # One shared subscription: new events were read once per notification, not once per stream; streams
    # joining together shared their replay reads.
    assert 1 <= reads["read_replay"] <= streams + 1
    assert reads["read_events_after"] <= len(reference) + 10
    wait_until(lambda: live_server.hub.open_streams == 0, "every stream closed")
    assert live_server.hub.channels == {}
    assert live_server.metric("vision_trainer_event_streams") == 0


# --- replay, then live --------------------------------------------------------------------------------


def test_clients_joining_mid_job_get_the_replay_then_live_events_without_gap_or_duplicate(
    live_server: LiveServer,
) -> None:
    slow_replays(live_server.hub)
    job_id = live_server.fake_job()
    total = 300
    writer_done = threading.Event()

    def write() -> None:
        for n in range(total):
            live_server.write_events(job_id, [("progress", {"phase": "training", "done": n, "total": total})])
            time.sleep(0.005)
        live_server.finish(job_id)
        writer_done.set()

    def join(n: int) -> tuple[int, list[Event]]:
        time.sleep(n * 0.025)  # clients arrive all through the job
        last_id = 0
        if n % 3 == 1:  # some reconnect from where an earlier stream stopped
            first = read_events_until(live_server.url, job_id, count=5)
            last_id = first[-1][0]
        return last_id, read_events(live_server.url, job_id, last_id=last_id)

    writer = threading.Thread(target=write)
    writer.start()
    with ThreadPoolExecutor(60) as pool:
        joined = list(pool.map(join, range(60)))
    writer.join()
    everything = read_events(live_server.url, job_id)
    assert len(everything) == total + 1 and everything[-1][1] == "status"
    for last_id, events in joined:
        assert events == [e for e in everything if e[0] > last_id]


def slow_replays(hub: JobEventHub) -> None:
    """Replay reads take a while after their query, as on a busy database: events committed meanwhile
    are live events for whoever that read serves."""
    original = hub.read

    def slowed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            result = fn(*args)
            time.sleep(0.05)
            return result

        return run

    async def read(fn: Callable[..., Any], *args: Any) -> Any:
        return await original(slowed(fn) if fn.__name__ == "read_replay" else fn, *args)

    hub.read = read  # type: ignore[method-assign]


def read_events_until(url: str, job_id: str, *, count: int) -> list[Event]:
    """The first ``count`` events of a stream, then hang up."""
    got: list[Event] = []

    class Enough(Exception):
        pass

    def take(event: Event) -> None:
        got.append(event)
        if len(got) >= count:
            raise Enough

    try:
        read_events(url, job_id, on_event=take)
    except Enough:
        pass
    return got


# --- slow and stuck clients -----------------------------------------------------------------------


def stuck_client(url: str, job_id: str) -> socket.socket:
    """A client that asks for the events and never reads a byte (a tiny receive buffer)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def record_subscriptions(hub: JobEventHub) -> list[Any]:
    """The hub's subscriptions, in the order their streams opened."""
    opened: list[Any] = []
    original = hub.open

    async def recorded(job_id: str, after: int) -> Any:
        sub = await original(job_id, after)
        opened.append(sub)
        return sub

    hub.open = recorded  # type: ignore[method-assign]
    return opened


def test_a_stuck_client_is_dropped_without_holding_up_the_job_or_other_clients(live_server: LiveServer) -> None:
    hub = live_server.hub
    hub.queue_size = 4  # batches of events: one per database read
    opened = record_subscriptions(hub)
    job_id = live_server.fake_job()
    stuck = stuck_client(live_server.url, job_id)
    wait_until(lambda: len(opened) == 1, "the stuck client's stream opened")
    total, padding = 1000, "x" * 8000  # 8 MB: far more than the socket buffers hold
    with ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(read_events, live_server.url, job_id) for _ in range(3)]
        wait_until(lambda: hub.open_streams == 4, "the other clients' streams opened")
        for n in range(total):  # the "job": its commits never wait for any stream
            live_server.write_events(job_id, [("log", {"line": f"{n} {padding}"})])
            time.sleep(0.002)  # spread over many reads
        wait_until(lambda: opened[0].dropped, "the stuck client was dropped")
        live_server.finish(job_id)
        others = [reader.result(timeout=120) for reader in readers]
    everything = read_events(live_server.url, job_id)
    assert len(everything) == total + 1 and all(events == everything for events in others)
    assert live_server.metric("vision_trainer_event_streams_dropped_total") >= 1
    assert not opened[0].closed  # the stuck connection is still open, but nothing waits for it
    stuck.close()
    wait_until(lambda: hub.open_streams == 0, "the stuck client's stream closed")


def test_a_client_that_stopped_reading_is_closed_and_frees_its_slot(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "STUCK_CLIENT_S", 1.0)  # read by the watchdog as it starts
    app = create_app(settings)
    server, thread, url = run_server(app)
    try:
        live = LiveServer(app, url, http_client(url, timeout=60))
        job_id = live.fake_job()
        stuck = stuck_client(url, job_id)
        wait_until(lambda: live.hub.open_streams == 1, "the stuck client's stream opened")
        padding = "x" * 8000
        for n in range(300):  # 2.4 MB: the server's writes to this client block
            live.write_events(job_id, [("log", {"line": f"{n} {padding}"})])
        wait_until(lambda: live.hub.open_streams == 0, "the stuck stream was closed", timeout=60)
        assert live.hub.channels == {}
        stuck.close()
        live.client.close()
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_stuck_client_does_not_delay_a_real_job(live_server: LiveServer, colour_images) -> None:
    data, files = multipart({"red": colour_images(RED, 6), "blue": colour_images(BLUE, 6)}, epochs=2)
    job_id = live_server.client.post("/train", data=data, files=files).json()["job_id"]
    stuck = [stuck_client(live_server.url, job_id) for _ in range(3)]
    events = read_events(live_server.url, job_id)
    assert events[-1][2]["status"] == "succeeded"
    assert wait_for_job(live_server.client, job_id)["status"] == "succeeded"
    for sock in stuck:
        sock.close()
    wait_until(lambda: live_server.hub.open_streams == 0, "the stuck clients' streams closed")


# --- bounds and clean-up ------------------------------------------------------------------------------


def test_the_stream_limit_answers_503_and_metrics_count_open_streams(live_server: LiveServer) -> None:
    live_server.hub.max_streams = 3  # VT_MAX_EVENT_STREAMS
    job_id = live_server.fake_job()
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        streams = [client.stream("GET", f"/jobs/{job_id}/events") for _ in range(3)]
        responses = [stream.__enter__() for stream in streams]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert live_server.metric("vision_trainer_event_streams") == 3
        assert live_server.metric("vision_trainer_event_subscriptions") == 1  # one per job, not per stream
        refused = live_server.client.get(f"/jobs/{job_id}/events")
        assert refused.status_code == 503 and refused.json()["code"] == "too_many_streams"
        assert refused.headers["Retry-After"] and "VT_MAX_EVENT_STREAMS" in refused.json()["detail"]
        streams[0].__exit__(None, None, None)  # a client hangs up: its slot is free at once
        wait_until(lambda: live_server.hub.open_streams == 2, "the closed stream was removed")
        live_server.finish(job_id)
        assert read_events(live_server.url, job_id)[-1][1] == "status"
        for stream in streams[1:]:
            stream.__exit__(None, None, None)
    wait_until(lambda: live_server.hub.open_streams == 0, "every stream closed")
    assert live_server.hub.channels == {}
    missing = live_server.client.get(f"/jobs/{uuid.uuid4().hex}/events")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert live_server.hub.open_streams == 0 and live_server.hub.channels == {}


# --- lists --------------------------------------------------------------------------------------------


def test_list_requests_arriving_together_share_one_answer_and_see_changes_at_once(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vision_trainer.services import jobs as job_service

    calls = []
    original = job_service.list_jobs

    def slow_list(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        time.sleep(0.3)  # still computing when the others arrive
        return original(*args, **kwargs)

    monkeypatch.setattr(job_service, "list_jobs", slow_list)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: live_server.client.get("/jobs").json(), range(20)))
    assert all(answer == answers[0] for answer in answers) and answers[0]["count"] == 0
    assert len(calls) <= 2
    job_id = live_server.fake_job()  # a commit in this process: the next list is fresh
    assert live_server.client.get("/jobs").json()["items"][0]["job_id"] == job_id


# --- Last-Event-ID ----------------------------------------------------------------------------------


def raw_events(url: str, job_id: str, last_event_id: bytes) -> list[int]:
    """The ids of the events one stream sends for a header sent as these exact bytes."""
    with httpx.Client(base_url=url, timeout=60, verify=False) as client:
        with client.stream("GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": last_event_id}) as response:
            assert response.status_code == 200, response.read()
            return [int(line[3:]) for line in response.iter_lines() if line.startswith("id:")]


@pytest.mark.parametrize(
    "value",
    [
        "²".encode("latin-1"),  # a Unicode digit: str.isdigit() says yes, int() says no
        "١٢".encode(),  # Arabic-Indic digits, as UTF-8
        b"9" * 5000,  # past int()'s digit limit
        str(2**63).encode(),  # past the 64-bit ids
        b"-1",
        b"abc",
        b"",
    ],
)
def test_a_last_event_id_that_is_no_event_id_replays_from_the_start(live_server: LiveServer, value: bytes) -> None:
    job_id = live_server.fake_job()
    live_server.write_events(job_id, [("log", {"line": "one"}), ("log", {"line": "two"})])
    live_server.finish(job_id)
    everything = raw_events(live_server.url, job_id, b"0")
    assert len(everything) == 3
    assert raw_events(live_server.url, job_id, value) == everything


def test_a_last_event_id_continues_after_that_event(live_server: LiveServer) -> None:
    job_id = live_server.fake_job()
    live_server.write_events(job_id, [("log", {"line": "one"}), ("log", {"line": "two"})])
    live_server.finish(job_id)
    first, *rest = raw_events(live_server.url, job_id, b"0")
    assert raw_events(live_server.url, job_id, str(first).encode()) == rest

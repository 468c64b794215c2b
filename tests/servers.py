"""Real Redis and PostgreSQL servers for the tests, started from Debian's binaries in throwaway dirs.

When a binary is missing the test is skipped with the reason, except under ``CI=true``, where it
fails: CI installs the packages (``.ci/run``) and must run these tests.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest


def http_client(base_url: str, **options: object) -> httpx.Client:
    """A client for a server in another process or thread. A pooled connection idle for over a second
    is not reused: uvicorn closes idle connections after 5 s, and a request sent on one just as the
    server closes it fails with "Server disconnected without sending a response"."""
    return httpx.Client(base_url=base_url, limits=httpx.Limits(keepalive_expiry=1.0), **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(name: str, *search: str) -> str:
    """The path of ``name`` (on PATH or in ``search`` globs), or skip (fail under CI) when absent."""
    found = shutil.which(name) or next(
        (p for pattern in search for p in sorted(glob.glob(pattern), reverse=True)), None
    )
    if found:
        return found
    package = {"redis-server": "redis-server", "initdb": "postgresql", "chromium": "chromium"}.get(name, name)
    reason = f"{name} is not installed (Debian: apt-get install -y {package})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI must run these tests")
    pytest.skip(reason)


def _wait(check, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start; its log:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


class RedisServer:
    def __init__(self) -> None:
        binary = require_binary("redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="vt-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = self.dir / "redis.log"
        self.binary = binary
        import redis

        self.client = redis.Redis.from_url(self.url)
        self.start()

    def start(self) -> None:
        """Start the server, or start it again after ``kill()`` on the same port (empty: nothing is saved)."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _wait(self.client.ping, "redis-server", self.log)

    def kill(self) -> None:
        """SIGKILL the server, as when it crashes."""
        self.process.kill()
        self.process.wait(30)

    def flush(self) -> None:
        self.client.flushall()

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A cluster made with initdb and run with pg_ctl on a free port, as the postgres user when we are
    root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        initdb = require_binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
        bin_dir = Path(initdb).resolve().parent
        self.pg_ctl = str(bin_dir / "pg_ctl")
        self.dir = Path(tempfile.mkdtemp(prefix="vt-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self._as = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run([initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.start()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server, or start it again after ``halt()``: same port, same data."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"])

    def halt(self) -> None:
        """Stop the server at once, as a crash or a power cut would, keeping its data for ``start()``."""
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(self._as + command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(f"{command[0]} failed: {result.stdout}{result.stderr}{log}")

    def create_database(self) -> str:
        """A new empty database; its plain ``postgresql://`` URL."""
        import psycopg

        name = f"vt_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():  # not already halted
                self.halt()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_until_ready(client: httpx.Client, process: subprocess.Popen, describe: Callable[[], str]) -> None:
    """Poll ``/health/ready`` until the server answers 200; fail with ``describe()`` if it exits or
    takes over 90 s."""
    deadline = time.monotonic() + 90
    while True:
        try:
            if client.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server did not start: {describe()}")
        time.sleep(0.3)

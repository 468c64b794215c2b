"""Run a parser of untrusted input in a child process with CPU-time, memory and wall-clock limits.

The child cannot hold the server's GIL or grow the server's memory; when it passes its limits the
kernel stops it (SIGXCPU/SIGKILL on CPU time, MemoryError on address space) and the caller gets
``SandboxFailed`` instead of an answer.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 10
    memory_bytes: int = 512 << 20
    wall_seconds: float = 30.0
    max_output_bytes: int = 64 << 20


class SandboxFailed(Exception):
    """The child went past a limit or died; the message says which."""


def run_script(script: Path, args: list[str], limits: SandboxLimits) -> bytes:
    """Run a standard-library-only ``script`` (isolated mode, no site packages) and return its stdout.

    Raises:
        SandboxFailed: it ran out of CPU time, memory or wall time, or exited with an error.
    """

    def limit_child() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", str(script), *args],
            capture_output=True,
            timeout=limits.wall_seconds,
            preexec_fn=limit_child,  # noqa: PLW1509 - only setrlimit, which is async-signal-safe enough
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SandboxFailed(f"took longer than {limits.wall_seconds:g} s") from None
    if done.returncode != 0:
        reason = "ran out of CPU time" if done.returncode in (-24, -9) else "ran out of memory or failed"
        raise SandboxFailed(f"{reason} (exit status {done.returncode})")
    if len(done.stdout) > limits.max_output_bytes:
        raise SandboxFailed("answered more than it may")
    return done.stdout

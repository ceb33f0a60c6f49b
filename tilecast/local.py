"""Local child processes for the demo, the benchmarks and tests: a free port, a server, clean stops,
a command's wall time and peak memory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(repository: Path, port: int, *extra: str) -> list[str]:
    """`tilecast serve` on localhost with metrics off (a second server must not clash on its port)."""
    return [sys.executable, "-m", "tilecast", "serve", "--repository", str(repository), "--port", str(port),
            "--metrics-port", "-1", "--log-level", "WARNING", *extra]


@contextlib.contextmanager
def child_process(command: list[str], *, quiet: bool = True) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command for the length of a block; stop it with SIGTERM (graceful), kill it if it hangs."""
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(command, stdout=output, stderr=output)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timed_child(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of a command run to completion."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # reaps it, with its resource usage
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:4])} failed: {stderr.read().decode()[-800:]}")
        return seconds, usage.ru_maxrss / 1024, stdout.read().decode()

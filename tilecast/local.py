"""Local child processes for the demo, the benchmark and tests: a free port, a server, clean stops."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
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

"""`tilecast serve` as a process: SIGTERM stops new work, finishes what is in flight, exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import RGB_MODEL
from tilecast.client.remote import Client, TileReply
from tilecast.local import free_port
from tilecast.proto.errors import Unavailable


def test_sigterm_drains_in_flight_work(model_repository: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tilecast", "serve", "--repository", str(model_repository), "--port", str(port),
         "--metrics-port", "-1", "--grace-period-s", "60", "--max-batch-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = Client(f"127.0.0.1:{port}")
        client.wait_ready(timeout=60)
        rng = np.random.default_rng(0)
        inputs = {i: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for i in range(24)}
        replies: list[TileReply] = []
        signalled = threading.Event()
        for reply in client.stream(RGB_MODEL, inputs.items(), window=24):
            replies.append(reply)
            if not signalled.is_set():
                process.send_signal(signal.SIGTERM)
                signalled.set()
        assert sorted(r.id for r in replies) == list(range(24)), "in-flight tiles were dropped at shutdown"
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert "shutting down" in output and "stopped" in output
        with pytest.raises(Unavailable):
            Client(f"127.0.0.1:{port}", timeout=2).list_models()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
